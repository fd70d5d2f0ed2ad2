#!/usr/bin/env bash
# Build the PyTorch virtualenv examples/torch_dataloader.py and its test run in, apart from the project's
# .venv (torch needs setuptools>=77, petastorm 0.13.1 declares setuptools<70). Prints its path. Built
# once per content of requirements.txt + constraints.txt (a stamp file holds their hash), then reused;
# ~50 s on 2 cores, 1.2 GB (torch's CPU build: no CUDA libraries).
#
#   examples/pytorch/venv.sh [DIR]    # default: $IM2VEC_TORCH_VENV, else ~/.cache/im2vec/venv-torch
#
# torch==2.13.0+cpu is PyTorch's CPU build: pip must find it in its configured find-links or indexes;
# elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. PyPI's plain torch wheel for
# Linux pulls in several GB of CUDA libraries, which nothing here uses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${IM2VEC_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/im2vec/venv-torch}}"
python="${PYTHON:-python3.11}"
stamp="$venv/.im2vec-stamp"
want="$(cat "$here/requirements.txt" "$here/constraints.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  command -v "$python" >/dev/null || { echo "needs $python (set PYTHON=...)" >&2; exit 1; }
  rm -rf "$venv"
  started=$SECONDS
  "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -r "$here/requirements.txt" -c "$here/constraints.txt" >&2
  # Without its declared dependencies: reading a dataset needs neither pyspark nor setuptools<70.
  "$venv/bin/pip" install -q --no-deps petastorm -c "$here/constraints.txt" >&2
  echo "$want" > "$stamp"
  echo "built the PyTorch virtualenv $venv in $((SECONDS - started)) s" >&2
fi
echo "$venv"
