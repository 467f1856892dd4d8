"""Seconds per LIBERO env step with a dit4dit checkpoint, split between the policy and the simulator.

    MUJOCO_GL=egl python -m benchmarks.libero_env_step --policy-path CKPT --steps 40 --size 64

Builds the env, policy and processors exactly as `lerobot-eval` does (LeRobot's make_env / make_policy /
make_pre_post_processors / make_env_pre_post_processors) and runs one episode of `--steps` steps, timing
separately `env.step` (physics + rendering) and the policy side (observation conversion, LiberoProcessorStep,
the policy's preprocessor, `select_action`, postprocessors). Prints a JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy-path", required=True)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task-id", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=64, help="camera height and width the env renders")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    import numpy as np
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.envs.configs import LiberoEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from lerobot.utils.import_utils import register_third_party_plugins

    torch.set_num_threads(args.threads)
    register_third_party_plugins()
    env_cfg = LiberoEnv(
        task=args.suite,
        task_ids=[args.task_id],
        episode_length=args.steps,
        observation_height=args.size,
        observation_width=args.size,
    )
    policy_cfg = PreTrainedConfig.from_pretrained(args.policy_path)
    policy_cfg.pretrained_path = args.policy_path
    policy_cfg.device = args.device
    envs = make_env(env_cfg, n_envs=1)
    env = envs[args.suite][args.task_id]
    policy = make_policy(cfg=policy_cfg, env_cfg=env_cfg)
    policy.eval()
    pre, post = make_pre_post_processors(
        policy_cfg=policy_cfg,
        pretrained_path=args.policy_path,
        preprocessor_overrides={"device_processor": {"device": args.device}},
    )
    env_pre, env_post = make_env_pre_post_processors(env_cfg=env_cfg, policy_cfg=policy_cfg)

    t0 = time.perf_counter()
    policy.reset()
    observation, _ = env.reset(seed=[0])
    reset_s = time.perf_counter() - t0
    t_policy, t_env, steps = 0.0, 0.0, 0
    for _ in range(args.steps):
        t = time.perf_counter()
        obs = preprocess_observation(observation)
        obs["task"] = list(env.call("task_description"))
        obs = pre(env_pre(obs))
        with torch.inference_mode():
            action = policy.select_action(obs)
        action = env_post({"action": post(action)})["action"]
        action_np = action.to("cpu").numpy()
        t_policy += time.perf_counter() - t
        t = time.perf_counter()
        observation, _, terminated, truncated, _ = env.step(action_np)
        t_env += time.perf_counter() - t
        steps += 1
        if np.any(terminated) or np.any(truncated):
            break
    env.close()
    total = t_policy + t_env
    print(
        json.dumps(
            {
                "suite": args.suite,
                "task_id": args.task_id,
                "image_size": args.size,
                "steps": steps,
                "chunk_size": policy_cfg.chunk_size,
                "n_action_steps": policy_cfg.n_action_steps,
                "reset_s": round(reset_s, 2),
                "s_per_step": round(total / steps, 4),
                "policy_s_per_step": round(t_policy / steps, 4),
                "env_s_per_step": round(t_env / steps, 4),
                "policy_share": round(t_policy / total, 3),
                "env_share": round(t_env / total, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
