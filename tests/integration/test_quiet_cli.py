"""`im2vec tag` and `im2vec search` keep TensorFlow's start-up notices off the terminal (pipeline.quiet)."""
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import needs_openclipart

NOTICES = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "port.cc", "I0000")
IMAGE = "/usr/share/darknet/data/dog.jpg"
pytestmark = [pytest.mark.slow, needs_openclipart, pytest.mark.skipif(not os.path.exists(IMAGE), reason="Debian's darknet data")]


def im2vec(*args, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "IM2VEC_VERBOSE")}
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "im2vec"), *args], capture_output=True,
                          text=True, timeout=900, env={**environment, **env})


def test_tag_and_search_print_no_tensorflow_notices(trained):
    root = trained["root"]
    tagged, search = im2vec("tag", "--root", root, IMAGE), im2vec("search", "--root", root, "dog")
    for result in (tagged, search):
        assert result.returncode == 0, result.stderr
        assert not [n for n in NOTICES if n in result.stderr], result.stderr
    assert "dog.jpg" in tagged.stdout and "photo_id" in search.stdout
    verbose = im2vec("tag", "--root", root, IMAGE, IM2VEC_VERBOSE="1")
    assert verbose.returncode == 0 and any(n in verbose.stderr for n in NOTICES)   # the notices exist to drop
