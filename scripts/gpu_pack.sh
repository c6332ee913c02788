#!/usr/bin/env bash
# The GPU pack's entry on a lent GPU machine (docs/gpu_pack.md): install the carried wheels (never torch: the
# machine's CUDA build is used), then train, export, score and pack every job of configs/gpu-pack.yaml into $OUT.
#   device tool:  run(command="bash scripts/gpu_pack.sh", carry=[".gpu-pack"], timeout_s=600)
# Arguments are passed to `scripts/gpu_pack.py run` (e.g. --minutes 3 for a shorter run).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?"set OUT to the results folder"}
[ -d .gpu-pack/shard ] && [ -d .gpu-pack/wheels ] || { echo "no .gpu-pack: run python scripts/gpu_pack.py build here first"; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu-pack/wheels/*.whl || exit 3
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi -L 2>/dev/null
# fail in seconds, not minutes, if the image lacks a module the jobs import
python3 -c "import soundtok.train.gan, soundtok.train.flow, soundtok.train.export, soundtok.cli.main, tensorboard" || exit 4
PYTHONUNBUFFERED=1 python3 scripts/gpu_pack.py run --out "$out" "$@" 2>&1 | tee "$out/pack.log"
