#!/usr/bin/env bash
# The whole offline Unitree G1 loop on the simulated G1, with LeRobot's own CLIs:
#   start the bridge -> lerobot-teleoperate (expert's rate) -> lerobot-record N episodes -> lerobot-train
#   -> lerobot-rollout --inference.type=rtc for M minutes
# and one last line: presses_per_minute=<policy> expert=<expert> episodes=<n> train_minutes=<m>
#
#   bash examples/g1/offline_loop.sh                      # defaults: 30 episodes, configs/unitree_g1_sim.json
#   bash examples/g1/offline_loop.sh --policy act         # LeRobot's ACT on the same recordings
#   bash examples/g1/offline_loop.sh --episodes 2 --episode-s 4 --steps 10 --rollout-minutes 0.25  # smoke run
#
# Options are those of `dit4dit-g1-loop --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/env.sh"  # creates .venv and installs the project (with the g1 extra) on first use
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-egl}"  # off-screen rendering, no display needed
exec dit4dit-g1-loop "$@"
