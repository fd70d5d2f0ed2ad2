"""index, tag and search on a real trained run: the shared openclipart run of conftest.py, trained and
indexed by the real stages. Queries go through the real `im2vec` command. Relevance is measured against the corpus's own tags: the precision of the
top results for a tag against that tag's base rate among the indexed images.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from pipeline import cli, query, storage
from tests.integration.conftest import needs_openclipart

DARKNET = sorted(Path("/usr/share/darknet/data").glob("*.jpg"))[:3]
TOP = 20          # results judged per query
FREQUENT = 10     # the most frequent tags are queried

pytestmark = [pytest.mark.slow, needs_openclipart]


@pytest.fixture(scope="module")
def indexed(trained):
    """The trained run's root and its index manifest."""
    return trained["root"], storage.read_manifest(storage.join(trained["root"], "index"))


@pytest.fixture(scope="module")
def corpus(indexed):
    """The model, the index, and {tag: set of indexed photo ids carrying it} from tagged/."""
    root, _ = indexed
    model, index = query.load_model(root), query.load_index(root)
    tagged = ds.dataset(storage.filesystem(storage.join(root, "tagged"))[1], format="parquet").to_table(columns=["photo_id", "tag_ids"])
    indexed_ids = set(index.photo_ids.tolist())
    carrying: dict[str, set] = {}
    for photo_id, tag_ids in zip(tagged.column("photo_id").to_pylist(), tagged.column("tag_ids").to_pylist()):
        if photo_id in indexed_ids:
            for tag_id in tag_ids or []:
                carrying.setdefault(model.tags[tag_id], set()).add(photo_id)
    return model, index, carrying


def precision_and_base_rate(model, index, carrying, query_text: str, tag: str) -> tuple[float, float]:
    found = [photo_id for photo_id, _ in query.search(model, index, query_text, k=TOP)]
    return np.mean([p in carrying[tag] for p in found]), len(carrying[tag]) / len(index.photo_ids)


def test_index_has_one_unit_embedding_per_feature_row(indexed):
    root, manifest = indexed
    features = storage.read_manifest(storage.join(root, "features"))
    index = query.load_index(root)
    assert manifest["rows_in"] == manifest["rows_out"] == features["rows_total"] == len(index.photo_ids)
    assert len(np.unique(index.photo_ids)) == len(index.photo_ids)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1, atol=2e-3)   # float16 storage
    assert index.model_sha256 == query.load_model(root).model_sha256


def test_tag_json_on_images_never_in_the_corpus(indexed, tmp_path, capsys):
    from PIL import Image
    from skimage import data

    root, _ = indexed
    chelsea = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(chelsea)
    inputs = [str(chelsea), *map(str, DARKNET)]
    assert cli.main(["tag", "--root", root, "--k", "4", "--json", *inputs]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == inputs
    for ranked in out.values():
        assert len(ranked) == 4 and len({r["tag"] for r in ranked}) == 4
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)


def test_tag_any_word_returns_words_outside_the_vocabulary(indexed, corpus, capsys):
    root, _ = indexed
    model, index, _ = corpus
    photo_id = str(index.photo_ids[0])
    assert cli.main(["tag", "--root", root, "--k", "10", "--any-word", "--json", photo_id]) == 0
    tags = [r["tag"] for r in json.loads(capsys.readouterr().out)[photo_id]]
    assert len(tags) == 10 and set(tags) - set(model.tags)


def test_search_for_frequent_tags_beats_their_base_rate(corpus):
    model, index, carrying = corpus
    frequent = sorted(carrying, key=lambda t: -len(carrying[t]))[:FREQUENT]
    results = [precision_and_base_rate(model, index, carrying, tag, tag) for tag in frequent]
    precision, base = np.mean(results, axis=0)
    print(f"P@{TOP} over the {FREQUENT} most frequent tags: {precision:.3f}, base rate {base:.3f}")
    assert precision > 1.5 * base


def test_zero_shot_search_finds_images_of_related_tags(corpus):
    """For each frequent tag, its nearest GloVe word that is not a tag finds images carrying the tag."""
    model, index, carrying = corpus
    vocabulary = set(model.tags)
    results = []
    for tag in sorted(carrying, key=lambda t: -len(carrying[t]))[:FREQUENT]:
        if tag not in model.words.key_to_index:
            continue
        word = next(w for w, _ in model.words.most_similar(tag, topn=50)
                    if w not in vocabulary and query.WORD_PATTERN.match(w))
        results.append(precision_and_base_rate(model, index, carrying, word, tag))
    precision, base = np.mean(results, axis=0)
    print(f"zero-shot P@{TOP} over {len(results)} neighbour words: {precision:.3f}, base rate {base:.3f}")
    assert len(results) >= 5 and precision > 1.5 * base


def test_search_cli_table_json_and_a_clean_error(indexed, corpus, capsys):
    root, _ = indexed
    _, _, carrying = corpus
    tag = max(carrying, key=lambda t: len(carrying[t]))
    assert cli.main(["search", "--root", root, "--k", "3", "--json", tag]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == tag and len(out["results"]) == 3
    assert all(isinstance(r["photo_id"], int) and isinstance(r["tags"], list) for r in out["results"])
    assert cli.main(["search", "--root", root, "--k", "3", tag]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["rank", "photo_id", "score"] and len(table) == 4
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--root", root, "blorfquux"],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode != 0
    assert "blorfquux" in done.stderr and "Traceback" not in done.stderr
