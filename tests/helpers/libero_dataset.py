"""Write a small LeRobotDataset in the format of LeRobot's LIBERO datasets, recorded in the real simulator.

    MUJOCO_GL=egl python -m tests.helpers.libero_dataset \
        --root outputs/data/libero_tiny --episodes 2

The features are those of `HuggingFaceVLA/libero` as `lerobot-eval --env.type=libero` feeds them to a policy:

- `observation.images.image`, (S, S, 3): agent-view camera, rotated 180° (the dataset convention;
  LeRobot's `LiberoProcessorStep` applies the same flip to the live env)
- `observation.images.image2`, (S, S, 3): wrist camera, rotated 180°
- `observation.state`, (8,): eef position (3), eef axis-angle (3), gripper finger qpos (2)
- `action`, (7,): delta eef position (3), delta rotation (3), gripper (-1 open, +1 close), in [-1, 1]

Frames come from LeRobot's own `LiberoEnv` and `LiberoProcessorStep`, so orientation and state layout are the
env's by construction. The actions are a smooth random exploration (not an expert): the dataset is for
checking the pipeline (lerobot-train -> lerobot-eval) end to end, not for learning the task. Needs the LIBERO
setup (`dit4dit-libero-setup`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

STATE_NAMES = [
    "eef_x",
    "eef_y",
    "eef_z",
    "eef_axis_angle_x",
    "eef_axis_angle_y",
    "eef_axis_angle_z",
    "gripper_qpos_left",
    "gripper_qpos_right",
]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
CAMERAS = ("observation.images.image", "observation.images.image2")


def libero_features(image_size: int) -> dict:
    image = {"dtype": "image", "shape": (image_size, image_size, 3), "names": ["height", "width", "channels"]}
    return {
        CAMERAS[0]: dict(image),
        CAMERAS[1]: dict(image),
        "observation.state": {"dtype": "float32", "shape": (8,), "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": (7,), "names": ACTION_NAMES},
    }


def _to_frame(obs: dict) -> dict:
    """A LeRobot-processed LIBERO observation (batch of 1) -> one dataset frame (HWC uint8 images, state)."""
    frame = {}
    for cam in CAMERAS:
        img = obs[cam][0]  # (3, H, W) float in [0, 1], already flipped by LiberoProcessorStep
        frame[cam] = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    frame["observation.state"] = obs["observation.state"][0].numpy().astype(np.float32)
    return frame


def make_libero_dataset(
    root: str | Path,
    *,
    suite: str = "libero_spatial",
    task_ids: tuple[int, ...] = (0,),
    num_episodes: int = 2,
    episode_length: int = 16,
    image_size: int = 64,
    repo_id: str = "local/dit4dit_libero_tiny",
    seed: int = 0,
):
    """Record `num_episodes` episodes per task of `suite` in the real LIBERO simulator; returns the
    dataset."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.envs.libero import LiberoEnv, _get_suite
    from lerobot.envs.utils import preprocess_observation
    from lerobot.processor.env_processor import LiberoProcessorStep

    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    ds = LeRobotDataset.create(
        repo_id, fps=20, features=libero_features(image_size), root=root, robot_type="panda", use_videos=False
    )
    step = LiberoProcessorStep()
    task_suite = _get_suite(suite)
    rng = np.random.default_rng(seed)
    for task_id in task_ids:
        env = LiberoEnv(
            task_suite,
            task_id,
            suite,
            obs_type="pixels_agent_pos",
            observation_height=image_size,
            observation_width=image_size,
            episode_length=episode_length,
        )
        try:
            for ep in range(num_episodes):
                raw, _ = env.reset(seed=seed + ep)
                drift = rng.uniform(-0.5, 0.5, 6)
                for t in range(episode_length):
                    obs = step.observation(preprocess_observation(_batched(raw)))
                    action = np.clip(drift + rng.normal(0, 0.2, 6), -1, 1)
                    gripper = -1.0 if t < episode_length // 2 else 1.0  # open, then close
                    action = np.concatenate([action, [gripper]]).astype(np.float32)
                    ds.add_frame({**_to_frame(obs), "action": action, "task": env.task_description})
                    raw, *_ = env.step(action)
                ds.save_episode()
        finally:
            env.close()
    ds.finalize()
    return ds


def _batched(obs):
    """Add a leading batch dim to every array of a nested LIBERO observation (what a vector env returns)."""
    if isinstance(obs, dict):
        return {k: _batched(v) for k, v in obs.items()}
    return np.asarray(obs)[None]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task-ids", default="0", help="comma-separated task ids of the suite")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task")
    parser.add_argument("--episode-length", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = make_libero_dataset(
        args.root,
        suite=args.suite,
        task_ids=tuple(int(t) for t in args.task_ids.split(",")),
        num_episodes=args.episodes,
        episode_length=args.episode_length,
        image_size=args.image_size,
        seed=args.seed,
    )
    print(f"wrote {ds.meta.total_episodes} episodes, {ds.meta.total_frames} frames to {args.root}")


if __name__ == "__main__":
    main()
