#!/usr/bin/env bash
# Video first on the simulated G1 (issue 28): does a video DiT pretrained on action-free recordings need fewer
# demonstrations? With LeRobot's own CLIs, as examples/g1/offline_loop.sh:
#   bridge -> lerobot-teleoperate (expert's rate) -> lerobot-record expert episodes and action-free ones
#   (lerobot-edit-dataset drops their action and observation.state) -> video pretraining, once
#   -> for k in {5, 15, 30}: lerobot-train (a) dit4dit joint, (b) dit4dit action-only, (c) the pretrained
#      video DiT then joint, (d) ACT, same steps for all -> lerobot-rollout (RTC for dit4dit) for 3 minutes
# It writes <out>/results.md, <out>/presses_vs_demos.png and <out>/summary.json, and resumes cell by cell.
#
#   bash examples/g1/video_first.sh                                   # the study, in outputs/g1_video_first
#   bash examples/g1/video_first.sh --smoke --out outputs/video_first_smoke    # every stage and arm, tiny (minutes)
#   bash examples/g1/video_first.sh --report-only                     # rebuild the table and plot
#
# Options are those of `python -m benchmarks.g1_video_first --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/env.sh"  # creates .venv and installs the project (with the g1 extra) on first use
cd "$ROOT"  # the benchmarks live in the repository, outside the wheel
export MUJOCO_GL="${MUJOCO_GL:-egl}"  # off-screen rendering, no display needed
exec python -m benchmarks.g1_video_first "$@"
