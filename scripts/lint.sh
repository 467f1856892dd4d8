#!/usr/bin/env bash
# The lint and format check (LeRobot's ruff rules, pinned ruff from the `test` extra); sets up .venv on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
ruff check .
ruff format --check .
