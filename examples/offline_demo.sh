#!/usr/bin/env bash
# Main job, fully offline on CPU: build a tiny Cosmos-Predict2.5 base -> record scripted-expert episodes into a
# LeRobotDataset -> lerobot-train dit4dit -> closed-loop evaluation. Idempotent: finished stages are reused.
#
#   bash examples/offline_demo.sh            # default budget (about 10 minutes on 2 CPU cores)
#   bash examples/offline_demo.sh --fast     # smoke run (about a minute)
#
# Environment overrides: OUT (output folder), EPISODES, STEPS, EVAL_EPISODES, BATCH_SIZE.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"

FAST=0
[ "${1:-}" = "--fast" ] && FAST=1
if [ "$FAST" = 1 ]; then
  OUT="${OUT:-outputs/offline_demo_fast}"; EPISODES="${EPISODES:-6}"; STEPS="${STEPS:-20}"
  EVAL_EPISODES="${EVAL_EPISODES:-2}"; BATCH_SIZE="${BATCH_SIZE:-4}"
else
  OUT="${OUT:-outputs/offline_demo}"; EPISODES="${EPISODES:-200}"; STEPS="${STEPS:-1500}"
  EVAL_EPISODES="${EVAL_EPISODES:-50}"; BATCH_SIZE="${BATCH_SIZE:-16}"
fi
mkdir -p "$OUT"
LOG="$OUT/demo.log"
echo "[demo] output: $OUT (log: $LOG)"
start=$(date +%s)

if [ ! -f "$OUT/base/model_index.json" ]; then
  echo "[demo] 1/4 building the tiny Cosmos-Predict2.5 base"
  python -m lerobot_dit4dit.tiny_base --output "$OUT/base" >>"$LOG" 2>&1
else
  echo "[demo] 1/4 tiny base: reusing $OUT/base"
fi

if [ ! -f "$OUT/data/meta/info.json" ]; then
  echo "[demo] 2/4 recording $EPISODES scripted-expert episodes"
  python -m lerobot_dit4dit.synthetic_dataset --root "$OUT/data" --episodes "$EPISODES" 2>>"$LOG" | tee -a "$LOG"
else
  echo "[demo] 2/4 dataset: reusing $OUT/data"
fi

CKPT="$OUT/train/checkpoints/$(printf '%06d' "$STEPS")/pretrained_model"
train_start=$(date +%s)
if [ ! -f "$CKPT/model.safetensors" ]; then
  echo "[demo] 3/4 lerobot-train dit4dit for $STEPS steps (progress bar below)"
  rm -rf "$OUT/train"
  lerobot-train \
    --policy.type=dit4dit --policy.base_model="$OUT/base" --policy.base_model_revision=null \
    --policy.device=cpu --policy.push_to_hub=false \
    --policy.extract_layer=2 --policy.max_prompt_tokens=64 --policy.image_resolution='[32,32]' \
    --policy.chunk_size=8 --policy.n_action_steps=4 --policy.max_state_dim=8 --policy.max_action_dim=8 \
    --policy.action_num_layers=2 --policy.action_num_heads=2 --policy.action_head_dim=16 \
    --policy.action_hidden_size=64 --policy.action_dropout=0.0 \
    --policy.optimizer_lr_action=1e-3 --policy.optimizer_lr_video=1e-3 \
    --policy.scheduler_warmup_steps=100 --policy.scheduler_decay_steps="$STEPS" --policy.scheduler_decay_lr=1e-5 \
    --dataset.repo_id=local/dit4dit_reach --dataset.root="$OUT/data" --dataset.video_backend=pyav \
    --num_workers=0 --batch_size="$BATCH_SIZE" --steps="$STEPS" --save_freq="$STEPS" --log_freq=100 \
    --output_dir="$OUT/train" --wandb.enable=false 2>&1 | tee -a "$LOG" | grep --line-buffered -E "step:|Checkpoint|End of training" || true
  [ -f "$CKPT/model.safetensors" ] || { echo "[demo] training failed, see $LOG" >&2; exit 1; }
else
  echo "[demo] 3/4 checkpoint: reusing $CKPT"
fi
train_end=$(date +%s)

echo "[demo] 4/4 closed-loop evaluation over $EVAL_EPISODES episodes (seeds disjoint from recording)"
python -m lerobot_dit4dit.offline_demo --checkpoint "$CKPT" --episodes "$EVAL_EPISODES" \
  --output "$OUT/eval_info.json" 2>>"$LOG" | tail -n 1 >"$OUT/result.txt"
end=$(date +%s)
read -r result <"$OUT/result.txt"
echo "$result train_minutes=$(( (train_end - train_start) / 60 )) total_minutes=$(( (end - start) / 60 ))"
