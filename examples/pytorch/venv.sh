#!/usr/bin/env bash
# Build the PyTorch virtualenv examples/torch_dataloader.py and its test run in, apart from the project's
# .venv (torch needs setuptools>=77, petastorm 0.13.1 declares setuptools<70). Prints its path; ~50 s on
# 2 cores, once, 1.2 GB (torch's CPU build: no CUDA libraries).
#
#   examples/pytorch/venv.sh [DIR]    # default: $IM2VEC_TORCH_VENV, else ~/.cache/im2vec/venv-torch
#
# torch==2.13.0+cpu is PyTorch's CPU build: pip must find it in its configured find-links or indexes;
# elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. PyPI's plain torch wheel for
# Linux pulls in several GB of CUDA libraries, which nothing here uses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../deploy/side-venv.sh" "$here" "${1:-${IM2VEC_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/im2vec/venv-torch}}"
