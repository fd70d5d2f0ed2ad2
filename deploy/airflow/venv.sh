#!/usr/bin/env bash
# Build the Airflow virtualenv the DAG's test runs in, apart from the project's .venv (Airflow's
# dependencies would move the project's pins). Prints its path; ~50 s on 2 cores, once.
#
#   deploy/airflow/venv.sh [DIR]      # default: $IM2VEC_AIRFLOW_VENV, else ~/.cache/im2vec/venv-airflow
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../side-venv.sh" "$here" "${1:-${IM2VEC_AIRFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/im2vec/venv-airflow}}"
