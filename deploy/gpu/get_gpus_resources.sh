#!/bin/sh
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript, and
# spark.worker.resource.gpu.discoveryScript on standalone workers): prints this machine's GPUs as
#     {"name":"gpu","addresses":["0","1"]}
# The addresses are nvidia-smi's indexes; jobs/features.py sets CUDA_DEVICE_ORDER=PCI_BUS_ID so
# that CUDA numbers GPUs the same way. Fails (non-zero exit) when nvidia-smi is missing or fails,
# so Spark reports the discovery error instead of starting an executor without its GPUs.
set -e
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "get_gpus_resources.sh: nvidia-smi is not on PATH: no NVIDIA driver on this machine?" >&2
    exit 1
fi
indexes=$(nvidia-smi --query-gpu=index --format=csv,noheader)
addresses=""
for index in $indexes; do
    addresses="${addresses:+$addresses,}\"$index\""
done
printf '{"name":"gpu","addresses":[%s]}\n' "$addresses"
