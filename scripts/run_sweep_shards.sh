#!/usr/bin/env bash
# Run a sweep as N shard processes on this machine, all sharing one sweep directory (a many-core
# machine, or one GPU that a small model leaves mostly idle); waits for all, exits 1 if any failed.
#
#   bash scripts/run_sweep_shards.sh N SWEEP_FILE [inertia sweep options...]
#   e.g. bash scripts/run_sweep_shards.sh 6 examples/testbed_ablation.yaml --batch-size 64 --threads 2
#
# Each shard logs to $LOG_DIR/shard-K-of-N.log (default: the current directory); $PYTHON picks the
# interpreter (default: .venv/bin/python when there is one, else python); $GPUS=G spreads the
# shards over G GPUs (shard K sees only GPU K mod G). Rerun to resume.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 N SWEEP_FILE [inertia sweep options...]" >&2
  exit 2
fi
count=$1 file=$2
shift 2
default_python=python
[ -x .venv/bin/python ] && default_python=.venv/bin/python
python=${PYTHON:-$default_python}
logs=${LOG_DIR:-.}
mkdir -p "$logs"
pids=()
for ((k = 0; k < count; k++)); do
  if [ -n "${GPUS:-}" ]; then export CUDA_VISIBLE_DEVICES=$((k % GPUS)); fi
  "$python" cli.py sweep "$file" --shard "$k/$count" --quiet "$@" >"$logs/shard-$k-of-$count.log" 2>&1 &
  pids+=($!)
done
status=0
for k in "${!pids[@]}"; do
  if ! wait "${pids[$k]}"; then
    echo "shard $k/$count failed: see $logs/shard-$k-of-$count.log" >&2
    status=1
  fi
done
exit $status
