#!/usr/bin/env bash
# The test command: sets up .venv on first use, then runs the offline CPU test suite on two pytest-xdist
# workers, a test file per worker at a time (DIT4DIT_TEST_WORKERS=0 runs it in one process).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k libero`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec python -m pytest -n "${DIT4DIT_TEST_WORKERS:-2}" --dist loadfile "$@"
