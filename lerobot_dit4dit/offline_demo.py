"""Closed-loop evaluation of a dit4dit checkpoint on the offline point-reaching task.

The policy is loaded exactly as `lerobot-eval` loads it (checkpoint config, weights and the saved pre/post
processors) and driven step by step in `PointReachEnv` with seeds disjoint from the recording seeds.

    python -m lerobot_dit4dit.offline_demo --checkpoint outputs/demo/train/checkpoints/last/pretrained_model \
        --episodes 20 --output outputs/demo/eval_info.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .synthetic_dataset import PointReachEnv

EVAL_SEED_OFFSET = 100_000  # recording uses seeds 0..N-1


def _to_policy_observation(obs: dict) -> dict:
    """Env observation (HWC uint8 images, numpy state) -> LeRobot observation (CHW float in [0, 1])."""
    out = {}
    for key, value in obs.items():
        if key.startswith("observation.images."):
            out[key] = torch.from_numpy(value).permute(2, 0, 1).float() / 255.0
        elif key == "observation.state":
            out[key] = torch.from_numpy(value)
        else:
            out[key] = value
    return out


def evaluate(
    checkpoint: str | Path, episodes: int = 20, seed_offset: int = EVAL_SEED_OFFSET, distractor: bool = False
) -> dict:
    from lerobot.policies.factory import make_pre_post_processors

    from .modeling_dit4dit import DiT4DiTPolicy

    policy = DiT4DiTPolicy.from_pretrained(checkpoint)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(checkpoint))
    image_size = policy.config.input_features["observation.images.front"].shape[-1]
    env = PointReachEnv(image_size=image_size, state_dim=policy.config.state_dim, distractor=distractor)
    successes, lengths, expert = [], [], []
    start = time.perf_counter()
    for ep in tqdm(range(episodes), desc="evaluating", unit="episode"):
        seed = seed_offset + ep
        # The scripted expert on the same seed, as a reference for what is achievable.
        env.reset(seed)
        done = False
        while not done:
            _, done = env.step(env.expert_action(policy.config.action_dim))
        expert.append(env.success)

        obs = env.reset(seed)
        policy.reset()
        done = False
        while not done:
            with torch.no_grad():
                action = post(policy.select_action(pre(_to_policy_observation(obs))))
            obs, done = env.step(action[0].numpy())
        successes.append(env.success)
        lengths.append(env.t)
    elapsed = time.perf_counter() - start
    return {
        "episodes": episodes,
        "seeds": [seed_offset, seed_offset + episodes - 1],
        "success_rate": 100.0 * float(np.mean(successes)),
        "expert_success_rate": 100.0 * float(np.mean(expert)),
        "mean_episode_length": float(np.mean(lengths)),
        "per_episode_success": [bool(s) for s in successes],
        "eval_seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a pretrained_model directory of lerobot-train")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--distractor", action="store_true", help="as recorded with --distractor")
    args = parser.parse_args()
    info = evaluate(args.checkpoint, args.episodes, distractor=args.distractor)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(info, indent=2))
    print(
        f"success_rate={info['success_rate']:.1f} expert_success_rate={info['expert_success_rate']:.1f} "
        f"episodes={info['episodes']}"
    )


if __name__ == "__main__":
    main()
