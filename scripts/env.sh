#!/usr/bin/env bash
# Create (once) the project's Python 3.12 virtual environment in .venv and install the project into it.
# Sourced by scripts/test.sh and the examples; safe to run again (it only re-installs when pyproject changes).
# DIT4DIT_VENV picks another environment; DIT4DIT_SKIP_INSTALL=1 uses it as it is; DIT4DIT_EXTRAS picks the
# extras (default: test,libero,metaworld,g1, which the tests and the quickstart use).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIT4DIT_VENV:-$ROOT/.venv}"
EXTRAS="${DIT4DIT_EXTRAS:-test,libero,metaworld,g1}"

find_python312() {
  local candidates=("${PYTHON:-}" python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12)
  fi
  candidates+=(/usr/local/bin/python3.12 /usr/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] || continue
    if "$py" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      command -v "$py" 2>/dev/null || echo "$py"
      return 0
    fi
  done
  echo "error: Python 3.12 not found (LeRobot 0.6.1 needs Python >= 3.12); set PYTHON=/path/to/python3.12" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python312)"
  echo "[env] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

STAMP="$VENV/.dit4dit-installed-$EXTRAS"
if [ "${DIT4DIT_SKIP_INSTALL:-0}" != 1 ] && { [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; }; then
  echo "[env] installing lerobot_policy_dit4dit[$EXTRAS] (first time: torch, lerobot, diffusers; a few minutes)"
  "$VENV/bin/python" -m pip install --progress-bar on -e "$ROOT[$EXTRAS]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export WANDB_MODE="${WANDB_MODE:-disabled}"
