#!/usr/bin/env bash
# The test command: sets up .venv on first use, then runs the offline CPU test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k libero`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec python -m pytest "$@"
