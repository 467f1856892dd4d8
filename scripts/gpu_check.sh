#!/usr/bin/env bash
# The GPU checks in one command, for a CUDA machine (sets up .venv on first use like the test command):
#   bash scripts/gpu_check.sh [output dir, default outputs/gpu_check]
# 1. tests/test_device.py with --device cuda (a training step, a chunk, bf16 and a round trip, each against the
#    CPU);
# 2. the real-width bf16 action chunk per second at B=1 (random weights, one 224 px camera), eager and with
#    compile_model;
# 3. the peak CUDA memory of a B=4 training step (the LIBERO preset) with gradient checkpointing, and with LoRA.
# Prints one JSON line (also written to <output dir>/gpu_check.json); every stage's log is in the output dir.
# Targets on an H100-class card: >= 60 chunks/s eager, >= 150 compiled, the checkpointed B=4 step under 30 GB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT/outputs/gpu_check}" && cd "${1:-$ROOT/outputs/gpu_check}" && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch $(python -c 'import torch; print(torch.__version__)') sees no CUDA device; these checks need a CUDA GPU" >&2
  exit 2
fi
stage() {  # stage <name> <seconds> <command...>: run with a time limit, its output in $OUT/<name>.log
  local name=$1 limit=$2
  shift 2
  echo "[gpu_check] $name" >&2
  if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "gpu_check: stage '$name' failed or ran past ${limit}s; last lines of $OUT/$name.log:" >&2
    tail -n 30 "$OUT/$name.log" >&2
    exit 1
  fi
}

BASE="$OUT/real_width_base"
if [ ! -f "$BASE/model_index.json" ]; then
  stage build_base 240 python -c "
from lerobot_dit4dit.testing.tiny_base import BENCH_BASES, build_tiny_cosmos_base
build_tiny_cosmos_base('$BASE', BENCH_BASES['real'])"
fi
stage device_tests 120 python -m pytest -q -p no:cacheprovider tests/test_device.py --device cuda
SPEED=(python -m benchmarks.speed --base-model "$BASE" --real-size --device cuda --dtype bfloat16
  --resolution 224 --cameras 1 --inference-only --inference-batch-size 1 --warmup 3 --repeats 20)
stage chunk_eager 120 "${SPEED[@]}" --json "$OUT/chunk_eager.json"
stage chunk_compiled 240 "${SPEED[@]}" --compile --json "$OUT/chunk_compiled.json"
for recipe in checkpointing lora; do  # one recipe per process: the peak is the process's
  stage "train_$recipe" 120 python -m benchmarks.train_memory --measure --device cuda --base "$BASE" \
    --recipes "$recipe" --batch-size 4 --json "$OUT/train_$recipe.json"
done

python - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
tests = (out / "device_tests.log").read_text()
passed = re.search(r"(\d+) passed", tests)


def chunks_per_s(name):
    return round(1000 / json.loads((out / f"{name}.json").read_text())["results"]["chunk_ms"], 1)


def cuda_peak_gib(name):
    (row,) = json.loads((out / f"{name}.json").read_text())["recipes"].values()
    return round(row["torch.cuda.max_memory_allocated (GiB)"], 2)


import torch

result = {
    "device": torch.cuda.get_device_name(0),
    "device_tests_passed": int(passed.group(1)) if passed else 0,
    "chunks_per_s_b1_bf16_eager": chunks_per_s("chunk_eager"),
    "chunks_per_s_b1_bf16_compiled": chunks_per_s("chunk_compiled"),
    "train_b4_checkpointing_peak_gib": cuda_peak_gib("train_checkpointing"),
    "train_b4_lora_peak_gib": cuda_peak_gib("train_lora"),
}
line = json.dumps(result)
(out / "gpu_check.json").write_text(line + "\n")
print(line)
EOF
