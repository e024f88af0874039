#!/usr/bin/env bash
# The test bed's GPU work, in stages that each fit one call to a lent GPU machine (<= 10 minutes):
# the commands behind the v4 model card (inertia/testbed/weights/README.md) and its ablation.
#
#   bash scripts/testbed_gpu.sh train      # train v4 (stops itself after $MINUTES, default 8.5)
#   bash scripts/testbed_gpu.sh resume     # continue the same run to its last step
#   bash scripts/testbed_gpu.sh evaluate   # held-out evaluation at several CFG scales + attention probe
#   bash scripts/testbed_gpu.sh install    # pick the default CFG from the evaluation, ship the model
#                                          # ($CANDIDATES: several evaluated runs, the best ships)
#   bash scripts/testbed_gpu.sh ablation   # the ablation sweep and its report on the shipped model
#                                          # ($SWEEP: another sweep file, e.g. examples/testbed_rivals.yaml)
#   bash scripts/testbed_gpu.sh train-history     # the history-mode model: v4's recipe with half the
#                                                 # clips continuations of 4 history frames
#   bash scripts/testbed_gpu.sh resume-history    # continue it to its last step
#   bash scripts/testbed_gpu.sh evaluate-history  # held-out evaluation in the history mode and from a
#                                                 # first frame (1,408 items x 3 scales each)
#   bash scripts/testbed_gpu.sh sweep-history     # examples/testbed_history.yaml and its report
#
# The GPU machine lacks diffusers, pydantic and PyAV: `bash scripts/gpu_wheels.sh` here once, then carry
# the parts of .whl/bench and (for sweeps, which write videos) .whl/av, staging them into runs/site with
# scripts/stage_wheels.sh, as that script says.
# $RUN (default runs/testbed_v4) holds the training run, $HISTORY_RUN (runs/testbed_history, where
# examples/testbed_history.yaml looks for the model) the history model's (runs/ is git-ignored, so a
# warm GPU machine keeps them between calls and `resume` finds them); $PYTHON picks the interpreter (python3).
# A stage stopped by --max-minutes exits 0 here (the trainer's 10 means "resume me").
set -euo pipefail
cd "$(dirname "$0")/.."
run=${RUN:-runs/testbed_v4}
history_run=${HISTORY_RUN:-runs/testbed_history}
python=${PYTHON:-python3}

# v4: v2's model size, long-tailed motions and speeds and caption noise 0.3, with more of the rare
# motions than v3 (bounce 3, jump 1.5, leave 1.5, fast 0.35; v3: 0.5, 0.5, 1, 0.15) and 12,000 steps
# (v3: 9,500), run to the end. CAPTION_NOISE=0 makes every caption true: that model showed no static
# death at all (docs/testbed/v2/model_card.md). MOTION_WEIGHTS / SPEED_WEIGHTS / STEPS change the
# recipe (v3's: STEPS=9500 MOTION_WEIGHTS=left=8,right=8,up=2,down=2,leave=1,bounce=0.5,jump=0.5
# SPEED_WEIGHTS=slow=1,fast=0.15), LAYERS the depth (8; v4's candidate b: LAYERS=10 STEPS=10000,
# 12.9 MB in bfloat16, under the 16 MB cap).
train_flags=(
  --seed 0 --steps ${STEPS:-12000} --layers ${LAYERS:-8} --heads 6 --ffn-dim 768
  --still-fraction 0.6 --static-caption-prob ${CAPTION_NOISE:-0.3}
  --motion-weights ${MOTION_WEIGHTS:-left=8,right=8,up=2,down=2,leave=1.5,bounce=3,jump=1.5}
  --speed-weights ${SPEED_WEIGHTS:-slow=1,fast=0.35}
  --default-guidance 1.5 --save-dtype bfloat16 --compile
)

# The history model: the same recipe, half of its clips continuations (4 frames of a previous
# straight-line motion, then the commanded clip), so it runs in both modes.
history_flags=(--history-prob ${HISTORY_PROB:-0.5} --history-frames 4)

train() {  # train OUT [flags...]
  local status=0 out=$1
  shift
  "$python" -m inertia.testbed.train "${train_flags[@]}" --out "$out" "$@" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 10 ] || exit "$status"
}

case "${1:-}" in
  train) train "$run" --max-minutes "${MINUTES:-8.5}" ;;
  resume) train "$run" --resume --max-minutes "${MINUTES:-8.5}" ;;
  train-history) train "$history_run" "${history_flags[@]}" --max-minutes "${MINUTES:-8.5}" ;;
  resume-history) train "$history_run" "${history_flags[@]}" --resume --max-minutes "${MINUTES:-8.5}" ;;
  evaluate-history)
    "$python" -m inertia.testbed.evaluate --model "$history_run/model" --history-frames 4 --seeds 32 --batch-size 256 \
      --guidance ${GUIDANCE:-1,1.5,2} --json "$history_run/heldout_eval_history.json"
    "$python" -m inertia.testbed.evaluate --model "$history_run/model" --seeds 32 --batch-size 256 \
      --guidance ${GUIDANCE:-1,1.5,2} --json "$history_run/heldout_eval_i2v.json"
    ;;
  sweep-history)  # examples/testbed_history.yaml reads the model from runs/testbed_history/model
    LOG_DIR="$history_run/shards" PYTHON="$python" \
      bash scripts/run_sweep_shards.sh 6 examples/testbed_history.yaml --batch-size 64 --threads 2
    "$python" cli.py report outputs/sweeps/testbed_history
    ;;
  evaluate)
    "$python" -m inertia.testbed.evaluate --model "$run/model" --seeds 32 --batch-size 256 \
      --guidance ${GUIDANCE:-1,1.1,1.25,1.5,2} --json "$run/heldout_eval.json"
    "$python" -m inertia.testbed.attention_probe --model "$run/model" --seeds 8 --device cuda --out "$run/attention"
    ;;
  install)
    # The model to ship among $CANDIDATES (run directories, default $run, each evaluated) and its
    # default CFG, by the rule written in inertia/testbed/choose.py.
    evaluations=()
    for candidate in ${CANDIDATES:-$run}; do evaluations+=("$candidate/heldout_eval.json"); done
    read -r chosen guidance < <("$python" -m inertia.testbed.choose "${evaluations[@]}")
    chosen=$(dirname "$chosen")
    echo "shipping $chosen at default guidance $guidance"
    "$python" cli.py testbed set-defaults "$chosen/model" --guidance "$guidance"
    find inertia/testbed/weights -mindepth 1 ! -name README.md -exec rm -rf {} +  # the model card stays
    cp -r "$chosen/model/." inertia/testbed/weights/
    ;;
  ablation)
    sweep=${SWEEP:-examples/testbed_ablation.yaml}
    # The sweeps run the shipped weights. On the GPU machine every call copies the checkout again,
    # so weights installed by an earlier call are replaced by the checkout's: install, commit, then sweep.
    if [ -d "$run/model" ] && ! cmp -s "$run/model/transformer/diffusion_pytorch_model.safetensors" \
        inertia/testbed/weights/transformer/diffusion_pytorch_model.safetensors; then
      echo "error: the shipped weights are not $run/model's: run 'install' in this call, or commit them first" >&2
      exit 2
    fi
    LOG_DIR="$run/shards-$(basename "$sweep" .yaml)" PYTHON="$python" bash scripts/run_sweep_shards.sh ${SHARDS:-6} "$sweep" --batch-size 64 --threads 2
    dir="outputs/sweeps/$(basename "$sweep" .yaml)"
    "$python" cli.py report "$dir"
    # Every run's values beside the report, so other comparisons (each rival against relax, paired
    # by prompt and seed) can be computed later without the GPU.
    "$python" - "$dir" <<'EOF'
import csv, gzip, sqlite3, sys
query = "SELECT condition, prompt_id, seed, value_name, value FROM results ORDER BY condition, prompt_id, seed, value_name"
rows = sqlite3.connect(f"{sys.argv[1]}/results.sqlite").execute(query)
with gzip.open(f"{sys.argv[1]}/report/values.csv.gz", "wt", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["condition", "prompt_id", "seed", "value_name", "value"])
    writer.writerows(rows)
EOF
    ;;
  *)
    echo "usage: $0 train|resume|evaluate|install|ablation|train-history|resume-history|evaluate-history|sweep-history" >&2
    exit 2 ;;
esac
