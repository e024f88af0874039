#!/usr/bin/env bash
# FlashAttention-4 on the lent H200: its output against SDPA, then the Wan 2.1 1.3B suite with FA4 as the
# attention kernel of inertia's performance modes. The wheels come in parts from `bash scripts/fa4_wheels.sh`
# (.whl/fa4/1/, 2/, ...: four with a checkout of about 33 MB; see there) and `bash scripts/gpu_wheels.sh`
# (.whl/bench/1: diffusers, pydantic, torchao), carried by calls one after another while the machine stays
# warm (a call carries at most 64 MiB with the checkout; the wheel scripts print what each part takes):
#
#   bash benchmarks/fa4_gpu.sh stage     # calls 1-3: carry .whl/fa4/1, then 2, then 3
#   bash benchmarks/fa4_gpu.sh bench && bash benchmarks/fa4_gpu.sh
#                                        # call 4: carry .whl/bench/1 and .whl/fa4/4 (about 6-8 minutes);
#                                        # `bench` installs .whl/bench into runs/site: leave it and its
#                                        # part out when an earlier call of the session did
#
# Each mode stages the parts its call carried with scripts/stage_wheels.sh (in $STAGE, default
# /tmp/fa4-parts); once all are there it checks their sha256 and installs the eight wheels with ONE
# `pip install --target $SITE` (default /tmp/fa4-site; skipped when already done). The run without a mode
# needs FA4 installed (it stops, naming the parts to carry, while some are missing) and puts
# $SITE/nvidia_cutlass_dsl/dsl_packages on PYTHONPATH (what the wheel's .pth does in a normal install);
# diffusers and the rest come from $BENCH_SITE (default runs/site). Then:
#   benchmarks/fa4_check.py   FA4 against SDPA on random bf16 q/k/v of Wan 1.3B's and CogVideoX-5B's
#                             self-attention (max abs difference, relative L2 to float32, TFLOP/s), and
#                             FA4 as one node of a torch.compile(fullgraph) graph -> $RESULTS/fa4_check_h200.json
#   benchmarks/suite.py       $ONLY (default stock, all, all_fa4, fast, fast_fa4, fast_float8_fa4 of Wan 2.1
#                             1.3B at 480x832x81), budget $BUDGET s, each fast and fa4 variant's final video
#                             decoded and compared with `all`'s (--decode-final) -> $RESULTS/suite_h200_fa4.json
# and fa4_check.py --rows proposes attention_table.json rows from the suite's eager variants. Every JSON
# is copied to $OUT when the device tool sets it. $ONLY may name the cuDNN FP8 variants too (e.g.
# fast_float8_cudnnfp8) where .whl/cudnn was staged in an earlier call (bash scripts/stage_wheels.sh cudnn
# runs/cudnn-site) and that folder is on PYTHONPATH: this script keeps the PYTHONPATH it is given.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
site=${SITE:-/tmp/fa4-site}
bench=${BENCH_SITE:-runs/site}
case "$bench" in /*) ;; *) bench=$PWD/$bench ;; esac
case "${1:-}" in
  bench) exec bash scripts/stage_wheels.sh bench "$bench" ;;
  stage) exec bash scripts/stage_wheels.sh fa4 "$site" ;;
esac
bash scripts/stage_wheels.sh --require fa4 "$site"
export PYTHONPATH="$site:$site/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PYTHONPATH:$bench"
"$python" -c 'import diffusers, pydantic' 2>/dev/null || {
  echo "error: no diffusers in $bench: carry .whl/bench/1 (bash scripts/gpu_wheels.sh) with 'bash $0 bench' first" >&2
  exit 1
}
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1

results=${RESULTS:-benchmarks/results}
mkdir -p "$results"
"$python" benchmarks/fa4_check.py --json "$results/fa4_check_h200.json"
"$python" benchmarks/suite.py --decode-final --only "${ONLY:-wan2.1-t2v-1.3b:stock+all+all_fa4+fast+fast_fa4+fast_float8_fa4}" \
  --budget "${BUDGET:-400}" --json "$results/suite_h200_fa4.json"
"$python" benchmarks/fa4_check.py --rows "$results/suite_h200_fa4.json" --json "$results/fa4_table_rows_h200.json"
if [ -n "${OUT:-}" ]; then
  cp "$results/fa4_check_h200.json" "$results/suite_h200_fa4.json" "$results/fa4_table_rows_h200.json" "$OUT/"
fi
