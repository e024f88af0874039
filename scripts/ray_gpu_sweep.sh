#!/usr/bin/env bash
# The Ray sweep measurement of issue 16, for a 2-GPU host (nvidia-h200-x2), in one call once Ray is staged:
#
#   bash scripts/repack_ray.sh                      # here, once: .whl/ray/1/, 2/ (36.6 MB in two parts)
#   bash scripts/stage_wheels.sh ray runs/site-ray  # there, one call per part but the last: carry .whl/ray/1, ...
#   bash scripts/ray_gpu_sweep.sh                   # there, carrying the last part: local, 1 actor, 2 actors,
#                                                   # 6 actors -> JSON
#
# Runs part of the test-bed ablation ($SHARD, default every 16th batch: 1,152 runs in batches of 64)
# with the local executor and with Ray (benchmarks/ray_sweep.py), and writes throughput ratios and
# whether every table equals the local one to $JSON (default benchmarks/results/ray_sweep_h200x2.json;
# also copied to $OUT when the device tool sets it). Ray comes from .whl/ray's parts, joined and installed
# into $SITE (default runs/site-ray: git-ignored, so a warm machine keeps it) by scripts/stage_wheels.sh
# unless `import ray` already works; inertia's other packages (diffusers, pydantic, av, ...) must be
# installed as for testbed_gpu.sh (scripts/gpu_wheels.sh; with a checkout of about 33 MB, .whl/bench/1,
# .whl/av/2 and .whl/ray/2 fit one call, .whl/av/1 and .whl/ray/1 take one each).
# Extra arguments go to benchmarks/ray_sweep.py (e.g. --settings local,ray:2). Each setting plans the
# whole 18,304-run sweep first (45 s on 2 busy CPU cores here); if the call nears 10 minutes, SHARD=0/32.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
site=${SITE:-runs/site-ray}
if ! "$python" -c 'import ray' 2>/dev/null; then
  bash scripts/stage_wheels.sh --require ray "$site"
  export PYTHONPATH="$PWD/$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c 'import ray, torch; n = torch.cuda.device_count(); print(f"ray {ray.__version__}, {n} GPU(s)"); assert n >= 2, "needs 2 GPUs"'
json=${JSON:-benchmarks/results/ray_sweep_h200x2.json}
"$python" benchmarks/ray_sweep.py --shard "${SHARD:-0/16}" --out "$json" "$@"
if [ -n "${OUT:-}" ]; then cp "$json" "$OUT/"; fi
