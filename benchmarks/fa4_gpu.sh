#!/usr/bin/env bash
# FlashAttention-4 on the lent H200: its output against SDPA, then the Wan 2.1 1.3B suite with FA4 as the
# attention kernel of inertia's performance modes. The wheels come from `bash scripts/fa4_wheels.sh`
# (three parts; see there) and `bash scripts/gpu_wheels.sh` (.whl/bench: diffusers, pydantic, torchao),
# each carried by its own call while the machine stays warm (a call carries at most 64 MiB with the
# repository, and these do not fit two to a call):
#
#   bash benchmarks/fa4_gpu.sh bench     # call 1: carry .whl/bench (installs it into runs/site; skip it when
#                                        # an earlier call of the session did)
#   bash benchmarks/fa4_gpu.sh stage     # calls 2 and 3: carry .whl/fa4/1, then .whl/fa4/2
#   bash benchmarks/fa4_gpu.sh           # call 4: carry .whl/fa4/3 (about 6-8 minutes)
#
# The last call joins the parts in $STAGE (default /tmp/fa4-parts), checks their sha256, installs the
# eight wheels with ONE `pip install --target $SITE` (default /tmp/fa4-site; skipped when FA4 is already
# there) and puts $SITE/nvidia_cutlass_dsl/dsl_packages on PYTHONPATH (what the wheel's .pth does in a
# normal install); diffusers and the rest come from $BENCH_SITE (default runs/site). Then:
#   benchmarks/fa4_check.py   FA4 against SDPA on random bf16 q/k/v of Wan 1.3B's and CogVideoX-5B's
#                             self-attention (max abs difference, relative L2 to float32, TFLOP/s), and
#                             FA4 as one node of a torch.compile(fullgraph) graph -> $RESULTS/fa4_check_h200.json
#   benchmarks/suite.py       $ONLY (default stock, all, all_fa4, fast, fast_fa4, fast_float8_fa4 of Wan 2.1
#                             1.3B at 480x832x81), budget $BUDGET s -> $RESULTS/suite_h200_fa4.json
# and fa4_check.py --rows proposes attention_table.json rows from the suite's eager variants. Every JSON
# is copied to $OUT when the device tool sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stage=${STAGE:-/tmp/fa4-parts}
site=${SITE:-/tmp/fa4-site}
bench=${BENCH_SITE:-runs/site}
case "$bench" in /*) ;; *) bench=$PWD/$bench ;; esac
if [ "${1:-}" = bench ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$bench" .whl/bench/*.whl
  exit 0
fi
mkdir -p "$stage"
for part in .whl/fa4/[0-9]*/; do
  [ -f "$part/fa4.sha256" ] && cp "$part"/fa4.tar.* "$part/fa4.sha256" "$stage/"
done
if [ "${1:-}" = stage ]; then
  ls -l "$stage"
  exit 0
fi

if [ ! -d "$site/flash_attn/cute" ]; then
  [ -f "$stage/fa4.sha256" ] || { echo "error: no FA4 wheel part in $stage or .whl/fa4: bash scripts/fa4_wheels.sh" >&2; exit 1; }
  parts=$(sed -n 's/^parts //p' "$stage/fa4.sha256")
  have=$(find "$stage" -maxdepth 1 -name 'fa4.tar.[0-9]*' | wc -l)
  [ "$have" = "$parts" ] || { echo "error: $have of $parts FA4 wheel parts in $stage: stage the others first" >&2; exit 1; }
  cat "$stage"/fa4.tar.[0-9]* > "$stage/fa4.tar"
  (cd "$stage" && head -1 fa4.sha256 | sha256sum -c -)
  mkdir -p "$stage/wheels"
  tar -xf "$stage/fa4.tar" -C "$stage/wheels"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$stage"/wheels/*.whl
fi
export PYTHONPATH="$site:$site/nvidia_cutlass_dsl/dsl_packages${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PYTHONPATH:$bench"
"$python" -c 'import diffusers, pydantic' 2>/dev/null || {
  echo "error: no diffusers in $bench: carry .whl/bench (bash scripts/gpu_wheels.sh) with 'bash $0 bench' first" >&2
  exit 1
}
export PYTHONPATH="$PWD:$PYTHONPATH" PYTHONUNBUFFERED=1

results=${RESULTS:-benchmarks/results}
mkdir -p "$results"
"$python" benchmarks/fa4_check.py --json "$results/fa4_check_h200.json"
"$python" benchmarks/suite.py --only "${ONLY:-wan2.1-t2v-1.3b:stock+all+all_fa4+fast+fast_fa4+fast_float8_fa4}" \
  --budget "${BUDGET:-400}" --json "$results/suite_h200_fa4.json"
"$python" benchmarks/fa4_check.py --rows "$results/suite_h200_fa4.json" --json "$results/fa4_table_rows_h200.json"
if [ -n "${OUT:-}" ]; then
  cp "$results/fa4_check_h200.json" "$results/suite_h200_fa4.json" "$results/fa4_table_rows_h200.json" "$OUT/"
fi
