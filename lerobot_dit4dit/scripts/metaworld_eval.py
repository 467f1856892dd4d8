"""dit4dit-metaworld-eval: lerobot-eval with the MetaWorld render switches.

Its --help is the documentation of `lerobot_dit4dit.envs.metaworld`."""

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
        description=sys.modules["lerobot_dit4dit.envs.metaworld"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
