#!/usr/bin/env bash
# Build a virtualenv apart from the project's .venv, for a tool whose dependencies would move the
# project's pins (Airflow; PyTorch, whose setuptools clashes with Petastorm's). Prints its path.
# Built once per content of DIR's requirements.txt, constraints.txt and no-deps.txt (a stamp file
# holds their hash), then reused. no-deps.txt, if there, lists packages installed without their
# declared dependencies.
#
#   deploy/side-venv.sh DIR VENV
set -euo pipefail
here="$1"
venv="$2"
python="${PYTHON:-python3.11}"
stamp="$venv/.im2vec-stamp"
files=("$here/requirements.txt" "$here/constraints.txt")
[ -f "$here/no-deps.txt" ] && files+=("$here/no-deps.txt")
want="$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  command -v "$python" >/dev/null || { echo "needs $python (set PYTHON=...)" >&2; exit 1; }
  rm -rf "$venv"
  started=$SECONDS
  "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -r "$here/requirements.txt" -c "$here/constraints.txt" >&2
  if [ -f "$here/no-deps.txt" ]; then
    "$venv/bin/pip" install -q --no-deps -r "$here/no-deps.txt" -c "$here/constraints.txt" >&2
  fi
  echo "$want" > "$stamp"
  echo "built the virtualenv $venv in $((SECONDS - started)) s" >&2
fi
echo "$venv"
