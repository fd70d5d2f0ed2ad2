#!/usr/bin/env bash
# Build the Airflow virtualenv the DAG's test runs in, apart from the project's .venv (Airflow's
# dependencies would move the project's pins). Prints its path. Built once per content of
# requirements.txt + constraints.txt (a stamp file holds their hash), then reused; ~50 s on 2 cores.
#
#   deploy/airflow/venv.sh [DIR]      # default: $IM2VEC_AIRFLOW_VENV, else ~/.cache/im2vec/venv-airflow
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-${IM2VEC_AIRFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/im2vec/venv-airflow}}"
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
  echo "$want" > "$stamp"
  echo "built the Airflow virtualenv $venv in $((SECONDS - started)) s" >&2
fi
echo "$venv"
