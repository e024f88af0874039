#!/usr/bin/env bash
# Context-parallel measurement of issue 16 for a 2-GPU host (nvidia-h200-x2), in one call:
#
#   bash scripts/cp_gpu.sh                                   # Wan 2.1 1.3B, 480x832x81 (about 2-3 min)
#   MODEL=14b SIZE=720x1280x81 STEPS=2 bash scripts/cp_gpu.sh   # Wan 14B at 720p (a second call)
#
# Runs benchmarks/context_parallel.py on 1 GPU, then on 2 (torchrun; Ulysses attention, inertia's
# hooks after the all-to-all), unlearn off and on: seconds per CFG step, peak memory, speed-up, and
# the 2-GPU final latents' difference from the 1-GPU ones. Results go to $JSON (default
# benchmarks/results/context_parallel_h200x2.json, entries added per model and size; also copied to
# $OUT when the device tool sets it). Needs inertia's packages (diffusers, pydantic) as for
# testbed_gpu.sh; no weights (random, from one seed).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
json=${JSON:-benchmarks/results/context_parallel_h200x2.json}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
flags=(--model "${MODEL:-1.3b}" --size "${SIZE:-480x832x81}" --steps "${STEPS:-3}" --warmup "${WARMUP:-1}" --json "$json")
for gpus in 1 2; do
  "$python" -m torch.distributed.run --standalone --nproc-per-node "$gpus" benchmarks/context_parallel.py "${flags[@]}"
done
if [ -n "${OUT:-}" ]; then cp "$json" "$OUT/"; fi
