"""Write a small, real LeRobotDataset v3 offline: a scripted point-reaching task rendered by two cameras.

A 2-D point agent moves towards a coloured disc with a proportional controller (the scripted expert).
The instruction names the disc's colour; the scene camera (`front`) shows the agent and the disc (and, with
`--distractor`, a disc of the other colour that the policy must ignore), the `wrist` camera is centred on the
agent. State = (agent x, y, velocity x, y), action = the 2-D
velocity command, padded to `action_dim` with the gripper-like constant channels. The frames change smoothly
with the actions, so both the video loss and the action loss have something to learn.

    python -m tests.helpers.reach_dataset --root outputs/data/reach --episodes 20
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

COLOURS = {"red": (1.0, 0.1, 0.1), "blue": (0.1, 0.3, 1.0)}


def _render(size: int, agent: np.ndarray, targets: dict[str, np.ndarray], zoom: float = 1.0) -> np.ndarray:
    """Render a (size, size, 3) uint8 frame; coordinates live in [-1, 1]^2, `zoom` centres on the agent."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    coords = np.stack([(xs + 0.5) / size * 2 - 1, (ys + 0.5) / size * 2 - 1], -1) / zoom
    if zoom != 1.0:
        coords = coords + agent
    img = np.full((size, size, 3), 0.85, dtype=np.float32)
    img[..., 2] -= 0.15 * (coords[..., 1] + 1) / 2  # a gradient so the background is not flat
    for name, pos in targets.items():
        d = np.linalg.norm(coords - pos, axis=-1)
        img[d < 0.18] = COLOURS[name]
    d = np.linalg.norm(coords - agent, axis=-1)
    img[d < 0.12] = (0.1, 0.1, 0.1)
    return (img.clip(0, 1) * 255).astype(np.uint8)


class PointReachEnv:
    """The scripted task behind the dataset: move a point agent onto the disc whose colour the task names.

    Observations are what LeRobot feeds a policy: `observation.images.front` / `.wrist` as (3, S, S) float
    in [0, 1], `observation.state` (state_dim,) and the `task` string. Actions are (action_dim,) in [-1, 1];
    the first two dims are the velocity command (scaled by `max_step`), the rest are ignored.
    """

    max_step = 0.15
    success_radius = 0.1

    def __init__(
        self, image_size: int = 32, state_dim: int = 4, episode_length: int = 24, distractor: bool = False
    ):
        self.image_size, self.state_dim, self.episode_length = image_size, state_dim, episode_length
        self.distractor = distractor

    def reset(self, seed: int, goal: str | None = None) -> dict:
        rng = np.random.default_rng(seed)
        self.goal = goal or list(COLOURS)[seed % len(COLOURS)]
        self.targets = {name: rng.uniform(-0.7, 0.7, 2).astype(np.float32) for name in COLOURS}
        if not self.distractor:  # only the named disc is in the scene
            self.targets = {self.goal: self.targets[self.goal]}
        self.agent = rng.uniform(-0.8, 0.8, 2).astype(np.float32)
        self.vel = np.zeros(2, np.float32)
        self.t = 0
        return self.observation()

    @property
    def task(self) -> str:
        return f"move the black dot to the {self.goal} disc"

    def observation(self) -> dict:
        state = np.zeros(self.state_dim, np.float32)
        state[:2], state[2:4] = self.agent, self.vel
        return {
            "observation.images.front": _render(self.image_size, self.agent, self.targets),
            "observation.images.wrist": _render(self.image_size, self.agent, self.targets, zoom=2.0),
            "observation.state": state,
            "task": self.task,
        }

    def expert_action(self, action_dim: int) -> np.ndarray:
        """Proportional controller towards the goal, with a 'grasp' channel that switches on at the goal."""
        command = np.clip(0.5 * (self.targets[self.goal] - self.agent), -self.max_step, self.max_step)
        action = np.zeros(action_dim, np.float32)
        action[:2] = command / self.max_step
        action[2:] = 1.0 if self.success else -1.0
        return action

    @property
    def success(self) -> bool:
        return bool(np.linalg.norm(self.targets[self.goal] - self.agent) < self.success_radius)

    def step(self, action: np.ndarray) -> tuple[dict, bool]:
        """Apply an action; returns (observation, done). Done at success or after `episode_length` steps."""
        command = np.clip(np.asarray(action[:2], np.float32), -1, 1) * self.max_step
        self.vel = command.astype(np.float32)
        self.agent = np.clip(self.agent + command, -1, 1).astype(np.float32)
        self.t += 1
        return self.observation(), self.success or self.t >= self.episode_length


def make_reach_dataset(
    root: str | Path,
    *,
    repo_id: str = "local/dit4dit_reach",
    num_episodes: int = 8,
    episode_length: int = 24,
    image_size: int = 32,
    action_dim: int = 4,
    state_dim: int = 4,
    fps: int = 10,
    seed: int = 0,
    distractor: bool = False,
    overwrite: bool = True,
    stop_on_success: bool = True,
    rename: dict[str, str] | None = None,
):
    """Create the dataset at `root` and return it (a `LeRobotDataset`).

    Features: observation.images.front / observation.images.wrist (3, S, S) images, observation.state
    (state_dim,), action (action_dim,), plus the `task` string of every frame. Episodes end two frames after
    the goal is reached, or, with `stop_on_success=False`, always run `episode_length` frames (long enough
    for clips of future frames that do not run past the episode end). `rename` stores features under other
    keys, as a robot whose camera is named differently would record them.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if state_dim < 4 or action_dim < 2:
        raise ValueError(f"state_dim must be >= 4 and action_dim >= 2 (got {state_dim}, {action_dim}).")
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} exists; pass overwrite=True to replace it.")
        shutil.rmtree(root)
    features = {
        "observation.images.front": {
            "dtype": "image",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.images.wrist": {
            "dtype": "image",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {
            "dtype": "float32",
            "shape": (state_dim,),
            "names": [f"s{i}" for i in range(state_dim)],
        },
        "action": {"dtype": "float32", "shape": (action_dim,), "names": [f"a{i}" for i in range(action_dim)]},
    }
    rename = rename or {}
    features = {rename.get(k, k): v for k, v in features.items()}
    ds = LeRobotDataset.create(
        repo_id, fps=fps, features=features, root=root, robot_type="point2d", use_videos=False
    )
    env = PointReachEnv(
        image_size=image_size, state_dim=state_dim, episode_length=episode_length, distractor=distractor
    )
    for ep in range(num_episodes):
        obs = env.reset(seed=seed + ep)
        hold = 2  # after reaching the goal, record a few frames of holding still with the 'grasp' channel on
        for _ in range(episode_length):
            action = env.expert_action(action_dim)
            ds.add_frame({rename.get(k, k): v for k, v in {**obs, "action": action}.items()})
            obs, _ = env.step(action)
            if env.success and stop_on_success:
                hold -= 1
                if hold < 0:
                    break
        ds.save_episode()
    ds.finalize()
    return ds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="dataset directory (replaced if it exists)")
    parser.add_argument("--repo-id", default="local/dit4dit_reach")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--episode-length", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distractor", action="store_true", help="also draw the disc of the other colour")
    args = parser.parse_args()
    ds = make_reach_dataset(
        args.root,
        repo_id=args.repo_id,
        num_episodes=args.episodes,
        episode_length=args.episode_length,
        image_size=args.image_size,
        action_dim=args.action_dim,
        seed=args.seed,
        distractor=args.distractor,
    )
    print(f"wrote {ds.meta.total_episodes} episodes / {ds.meta.total_frames} frames to {args.root}")


if __name__ == "__main__":
    main()
