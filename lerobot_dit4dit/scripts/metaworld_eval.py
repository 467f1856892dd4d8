"""MetaWorld glue around LeRobot's own `MetaworldEnv`: scripted-expert recording and two process-wide render
switches that `lerobot-eval` cannot set.

- `record(...)`: scripted-expert demonstrations into a LeRobotDataset v3 that `lerobot-train` reads as is.
  The env is built with the arguments `lerobot-eval --env.type=metaworld` passes
  (obs_type="pixels_agent_pos", the corner2 camera at 480x480 with LeRobot's flip); frames are then
  downsized with the dit4dit preprocessor's own resize, so training and `lerobot-eval` see the same pixels.
  Features:

      observation.image  (S, S, 3) uint8   stored as PNG (no video codec between recording and evaluation)
      observation.state  (4,)      float32 hand xyz + gripper opening (the env's `agent_pos`)
      action             (4,)      float32 the expert's action, clipped to the env's [-1, 1] box
      task                         MetaWorld's task description, e.g. "Press a button from the top"

  Only successful episodes are kept unless `keep_failures`. Seeds are `seed_start`, +1, ... so evaluation can
  use a disjoint range (lerobot-eval seeds episode i with `--seed` + i).
- `disable_shadows()`: envs built afterwards render without MuJoCo shadows (2.6x faster on a CPU renderer,
  but other pixels: record and evaluate alike).
- `cap_episode_steps(limit)`: envs built afterwards end an episode after `limit` steps (LeRobot fixes 500 and
  ignores `--env.episode_length` for MetaWorld).

`dit4dit-metaworld-eval [--step-limit N] [--no-shadows] <lerobot-eval arguments>` is
`lerobot-eval` with those switches applied first (the sample-efficiency study evaluates with it):

    MUJOCO_GL=egl dit4dit-metaworld-eval --step-limit 100 --no-shadows \
        --policy.path=CKPT --env.type=metaworld --env.task=push-v3 --eval.n_episodes=10
"""

from __future__ import annotations

import sys

from lerobot_dit4dit.envs.metaworld import (
    cap_episode_steps,
    disable_shadows,
)


def main(argv: list[str] | None = None) -> None:
    """`lerobot-eval` with `--step-limit N` and `--no-shadows` applied to LeRobot's MetaworldEnv first."""
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--step-limit", type=int, default=None, help="end episodes after this many steps")
    parser.add_argument("--no-shadows", action="store_true", help="render without shadows (as recorded)")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.step_limit is not None:
        cap_episode_steps(args.step_limit)
    if args.no_shadows:
        disable_shadows()
    from lerobot.scripts.lerobot_eval import main as lerobot_eval

    sys.argv = [sys.argv[0], *rest]  # lerobot-eval parses sys.argv itself
    lerobot_eval()


if __name__ == "__main__":
    main()
