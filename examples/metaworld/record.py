"""Record MetaWorld scripted-expert demonstrations into a LeRobotDataset v3
(see `lerobot_dit4dit.envs.metaworld`).

    MUJOCO_GL=egl python examples/metaworld/record.py --tasks button-press-topdown-v3 --episodes 50 \
        --resolution 64 --root outputs/metaworld/data
"""

from __future__ import annotations

import argparse

from lerobot_dit4dit.envs.metaworld import REPO_ID, record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="dataset directory (replaced when recording completes)")
    parser.add_argument(
        "--tasks", nargs="+", default=["button-press-topdown-v3"], help="MetaWorld task names"
    )
    parser.add_argument("--episodes", type=int, default=50, help="episodes to keep per task")
    parser.add_argument("--resolution", type=int, default=64, help="square frame size, divisible by 16")
    parser.add_argument("--seed-start", type=int, default=0, help="first env seed (then +1 per attempt)")
    parser.add_argument(
        "--max-steps", type=int, default=400, help="step limit (lerobot-eval's episode_length)"
    )
    parser.add_argument("--keep-failures", action="store_true", help="also keep episodes the expert failed")
    parser.add_argument("--no-shadows", action="store_true", help="render without shadows (evaluate alike)")
    parser.add_argument("--repo-id", default=REPO_ID)
    args = parser.parse_args()
    summary = record(
        args.root,
        args.tasks,
        args.episodes,
        args.resolution,
        args.seed_start,
        args.max_steps,
        args.keep_failures,
        repo_id=args.repo_id,
        shadows=not args.no_shadows,
    )
    for task, s in summary["tasks"].items():
        rate = "n/a" if s["expert_success_rate"] is None else f"{s['expert_success_rate']:.1f}%"
        print(
            f"[record] {task}: {s['episodes']} episodes kept of {s['attempts']} (expert success {rate}), "
            f"mean length {s['mean_length']:.0f} steps"
        )
    print(
        f"[record] {summary['frames']} frames, seeds {summary['seed_start']}..{summary['seed_end']}, "
        f"{summary['seconds']:.0f} s -> {args.root}"
    )


if __name__ == "__main__":
    main()
