#!/usr/bin/env bash
# The main job, offline on CPU: MetaWorld scripted-expert demonstrations -> lerobot-train dit4dit ->
# lerobot-eval --env.type=metaworld. Idempotent: every finished stage is reused on the next run.
#
#   bash examples/quickstart.sh           # default recipe (under an hour on 2 CPU cores)
#   bash examples/quickstart.sh --fast    # smoke run of a few minutes (what CI runs)
#
# Overrides (environment): OUT, TASK, EPISODES, RESOLUTION, STEPS, BATCH_SIZE, EVAL_EPISODES,
# EVAL_BATCH_SIZE, EVAL_SEED, EVAL_STEP_LIMIT (--fast only). Full stage logs: $OUT/logs/; the short log:
# $OUT/quickstart.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"  # creates .venv and installs the project with its declared extras
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-egl}"  # off-screen MuJoCo rendering, no display needed

FAST=0
for arg in "$@"; do
  case "$arg" in
    --fast) FAST=1 ;;
    *) echo "usage: bash examples/quickstart.sh [--fast]" >&2; exit 2 ;;
  esac
done
PRESET=configs/metaworld_quickstart.json
TASK="${TASK:-button-press-topdown-v3}"
RESOLUTION="${RESOLUTION:-64}"
EVAL_SEED="${EVAL_SEED:-100000}"  # recording uses seeds 0, 1, ...; evaluation starts far above them
if [ "$FAST" = 1 ]; then
  OUT="${OUT:-outputs/quickstart_fast}"; EPISODES="${EPISODES:-2}"; STEPS="${STEPS:-4}"; BATCH_SIZE="${BATCH_SIZE:-4}"
  EVAL_EPISODES="${EVAL_EPISODES:-1}"; EVAL_BATCH_SIZE="${EVAL_BATCH_SIZE:-1}"
  # lerobot-eval with MetaWorld's 500-step episodes capped at 100 (the expert presses within 100 steps).
  EVAL=(dit4dit-metaworld-eval --step-limit "${EVAL_STEP_LIMIT:-100}")
else
  OUT="${OUT:-outputs/quickstart}"; EPISODES="${EPISODES:-50}"
  STEPS="${STEPS:-$(python -c "import json; print(json.load(open('$PRESET'))['steps'])")}"
  BATCH_SIZE="${BATCH_SIZE:-$(python -c "import json; print(json.load(open('$PRESET'))['batch_size'])")}"
  EVAL_EPISODES="${EVAL_EPISODES:-50}"; EVAL_BATCH_SIZE="${EVAL_BATCH_SIZE:-10}"
  EVAL=(lerobot-eval)
fi
mkdir -p "$OUT/logs"
LOG="$OUT/quickstart.log"
log() { echo "[quickstart] $*" | tee -a "$LOG"; }
# Run a stage with its full output in $OUT/logs/<name>.log and on the terminal (progress bars included).
stage() {
  local name="$1"; shift
  "$@" 2>&1 | tee "$OUT/logs/$name.log" || { log "$name failed; see $OUT/logs/$name.log"; exit 1; }
}
log "$(date -Is) task=$TASK episodes=$EPISODES steps=$STEPS eval_episodes=$EVAL_EPISODES out=$OUT"
start=$(date +%s)

if [ ! -f "$OUT/base/model_index.json" ]; then
  log "1/4 building the small Cosmos-Predict2.5-shaped base (random weights, same diffusers classes)"
  stage base dit4dit-tiny-base --output "$OUT/base.partial"
  rm -rf "$OUT/base" && mv "$OUT/base.partial" "$OUT/base"
else
  log "1/4 base: reusing $OUT/base"
fi

if [ ! -f "$OUT/data/meta/info.json" ]; then
  log "2/4 recording $EPISODES successful scripted-expert episodes of $TASK at ${RESOLUTION}px"
  stage record python examples/metaworld/record.py --root "$OUT/data" --tasks "$TASK" \
    --episodes "$EPISODES" --resolution "$RESOLUTION" --seed-start 0
else
  log "2/4 dataset: reusing $OUT/data"
fi

CKPT="$OUT/train/checkpoints/last/pretrained_model"
if [ ! -f "$CKPT/model.safetensors" ] || [ ! -f "$OUT/train_minutes.txt" ]; then
  log "3/4 lerobot-train dit4dit ($PRESET) for $STEPS steps at batch $BATCH_SIZE"
  rm -rf "$OUT/train"
  train_start=$(date +%s)
  stage train lerobot-train --config_path="$PRESET" \
    --policy.base_model="$OUT/base" --policy.image_resolution="[$RESOLUTION,$RESOLUTION]" \
    --dataset.root="$OUT/data" --output_dir="$OUT/train" \
    --steps="$STEPS" --save_freq="$STEPS" --batch_size="$BATCH_SIZE" --policy.scheduler_decay_steps="$STEPS"
  [ -f "$CKPT/model.safetensors" ] || { log "training wrote no checkpoint; see $OUT/logs/train.log"; exit 1; }
  python -c "print(round(($(date +%s) - $train_start) / 60, 1))" >"$OUT/train_minutes.txt"
else
  log "3/4 checkpoint: reusing $CKPT"
fi

if [ ! -f "$OUT/eval/eval_info.json" ]; then
  # LeRobot's MetaWorld env runs an episode until success or 500 steps (the expert needs under 100);
  # the --fast run caps them (EVAL above).
  log "4/4 lerobot-eval --env.type=metaworld over $EVAL_EPISODES episodes (seeds from $EVAL_SEED)"
  rm -rf "$OUT/eval"
  stage eval "${EVAL[@]}" --policy.path="$CKPT" --policy.device=cpu \
    --env.type=metaworld --env.task="$TASK" \
    --eval.n_episodes="$EVAL_EPISODES" --eval.batch_size="$EVAL_BATCH_SIZE" --eval.use_async_envs=false \
    --seed="$EVAL_SEED" --output_dir="$OUT/eval"
else
  log "4/4 evaluation: reusing $OUT/eval/eval_info.json"
fi

expert=$(python -c "import json; s=json.load(open('$OUT/data/recording.json'))['tasks']; print(', '.join(f\"{t}={v['expert_success_rate']:.0f}%\" for t, v in s.items()))")
log "expert success while recording: $expert; total $(( ($(date +%s) - start) / 60 )) min this run"
python - "$OUT/eval/eval_info.json" "$(cat "$OUT/train_minutes.txt")" <<'EOF' | tee -a "$LOG"
import json, sys
info = json.load(open(sys.argv[1]))
agg = info["overall"] if "overall" in info else info["aggregated"]
n = agg.get("n_episodes") or len(info.get("per_episode", []))
print(f"success_rate={agg['pc_success']:.1f} episodes={n} train_minutes={sys.argv[2]}")
EOF
