"""Record MetaWorld scripted-expert demonstrations into a LeRobotDataset v3 that `lerobot-train` reads as is.

The env is LeRobot's own `lerobot.envs.metaworld.MetaworldEnv`, built with the arguments
`lerobot-eval --env.type=metaworld` passes (obs_type="pixels_agent_pos", the corner2 camera at 480x480 with
LeRobot's flip). Frames are then downsized with the same antialiased bilinear resize the dit4dit preprocessor
applies at evaluation, so training and `lerobot-eval` see the same pixels. Features:

    observation.image  (S, S, 3) uint8   stored as PNG (no video codec between recording and evaluation)
    observation.state  (4,)      float32 hand xyz + gripper opening (the env's `agent_pos`)
    action             (4,)      float32 the expert's action, clipped to the env's [-1, 1] box
    task                         MetaWorld's task description, e.g. "Press a button from the top"

`--no-shadows` turns MuJoCo's shadow casting off (see `without_shadows`): 2.6x faster rendering on CPU, but
different pixels, so evaluation must then render the same way (examples/metaworld/sample_efficiency.py does).

Only successful episodes are kept unless --keep-failures is given. Seeds are `--seed-start`, +1, ... so
evaluation can use a disjoint range (lerobot-eval seeds episode i with `--seed` + i).

    MUJOCO_GL=egl python examples/metaworld/record.py --tasks button-press-topdown-v3 --episodes 50 \
        --resolution 64 --root outputs/metaworld/data
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lerobot_dit4dit.processor_dit4dit import resize_images

REPO_ID = "local/metaworld_expert"


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 with the dit4dit preprocessor's resize (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
    x = resize_images(x, (size, size))
    return (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def check_tasks(tasks: list[str]) -> None:
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    unknown = [t for t in tasks if t.removeprefix("metaworld-") not in TASK_DESCRIPTIONS]
    if unknown:
        known = ", ".join(sorted(TASK_DESCRIPTIONS))
        raise ValueError(f"Unknown MetaWorld task {unknown[0]!r}. Known tasks: {known}")


def without_shadows() -> None:
    """Make every LeRobot MetaworldEnv created from now on in this process render without shadows.

    On a CPU renderer (EGL/llvmpipe) shadow maps are most of MetaWorld's cost: 72 ms -> 28 ms per step at 480x480
    here. LeRobot builds the MuJoCo env lazily (`_ensure_env`), so the switch is applied right after it is built,
    on the model, before the first frame is rendered.
    """
    from lerobot.envs.metaworld import MetaworldEnv

    if getattr(MetaworldEnv._ensure_env, "_dit4dit_no_shadows", False):
        return
    ensure = MetaworldEnv._ensure_env

    def ensure_without_shadows(self):
        fresh = self._env is None
        ensure(self)
        if fresh:
            self._env.model.light_castshadow[:] = 0

    ensure_without_shadows._dit4dit_no_shadows = True
    MetaworldEnv._ensure_env = ensure_without_shadows


class ExpertRollout:
    """LeRobot's MetaworldEnv plus a tap on the raw 39-D state vector, which the scripted expert needs.

    `MetaworldEnv` only returns pixels and the 4-D agent_pos; the tap records the inner env's raw observation
    on every reset/step without changing what the env computes or renders.
    """

    def __init__(self, task: str):
        from lerobot.envs.metaworld import MetaworldEnv

        check_tasks([task])
        self.env = MetaworldEnv(task=task, obs_type="pixels_agent_pos", render_mode="rgb_array")
        self.env._ensure_env()
        inner = self.env._env
        self._raw = None
        step, reset = inner.step, inner.reset

        def tapped_step(action):
            out = step(action)
            self._raw = out[0]
            return out

        def tapped_reset(*args, **kwargs):
            out = reset(*args, **kwargs)
            self._raw = out[0]
            return out

        inner.step, inner.reset = tapped_step, tapped_reset
        self.description = self.env.task_description

    def run(self, seed: int, max_steps: int, on_frame) -> tuple[bool, int]:
        """Roll the expert out from `seed`; call on_frame(observation, action) before every step."""
        obs, _ = self.env.reset(seed=seed)
        for t in range(max_steps):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
                action = self.env.expert_policy.get_action(self._raw)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
            on_frame(obs, action)
            # MetaworldEnv resets itself after a success, so read the flag from this step's info.
            obs, _, terminated, truncated, info = self.env.step(action)
            if info.get("is_success"):
                return True, t + 1
            if terminated or truncated:
                break
        return False, max_steps

    def close(self) -> None:
        self.env.close()


def record(
    root: str | Path,
    tasks: list[str],
    episodes: int,
    resolution: int = 64,
    seed_start: int = 0,
    max_steps: int = 400,
    keep_failures: bool = False,
    max_attempts_factor: int = 3,
    repo_id: str = REPO_ID,
    fps: int = 80,
    shadows: bool = True,
) -> dict:
    """Record `episodes` expert episodes per task into a new dataset at `root`; return a summary dict."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if resolution % 16:
        raise ValueError(f"--resolution must be divisible by 16 (VAE stride 8 x patch 2), got {resolution}")
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    check_tasks(tasks)
    if not shadows:
        without_shadows()
    root = Path(root)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    features = {
        "observation.image": {
            "dtype": "image", "shape": (resolution, resolution, 3), "names": ["height", "width", "channels"]
        },
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": (4,), "names": ["dx", "dy", "dz", "grip"]},
    }  # fmt: skip
    ds = LeRobotDataset.create(repo_id, fps=fps, features=features, root=partial, robot_type="sawyer",
                               use_videos=False)  # fmt: skip
    summary = {"tasks": {}, "resolution": resolution, "seed_start": seed_start, "shadows": shadows}
    seed = seed_start
    start = time.perf_counter()
    for task in tasks:
        rollout = ExpertRollout(task)
        kept, tried, lengths = 0, 0, []
        bar = tqdm(total=episodes, desc=f"recording {task}", unit="episode")
        while kept < episodes:
            if tried >= max_attempts_factor * episodes:
                raise RuntimeError(
                    f"The scripted expert of {task!r} succeeded in only {kept}/{tried} episodes; "
                    f"pick another task or pass --keep-failures."
                )

            def on_frame(obs, action):
                ds.add_frame({
                    "observation.image": resize_frame(obs["pixels"], resolution),
                    "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
                    "action": action,
                    "task": rollout.description,
                })  # fmt: skip

            success, length = rollout.run(seed, max_steps, on_frame)
            tried += 1
            seed += 1
            if success or keep_failures:
                ds.save_episode()
                kept += 1
                lengths.append(length)
                bar.update(1)
            else:
                ds.clear_episode_buffer()
            bar.set_postfix(expert_success=f"{kept if not keep_failures else '-'}/{tried}")
        bar.close()
        rollout.close()
        summary["tasks"][task] = {
            "description": rollout.description,
            "episodes": kept,
            "attempts": tried,
            "expert_success_rate": None if keep_failures else 100.0 * kept / tried,
            "mean_length": float(np.mean(lengths)),
        }
    ds.finalize()
    summary["seed_end"] = seed - 1
    summary["frames"] = ds.meta.total_frames
    summary["seconds"] = time.perf_counter() - start
    (partial / "recording.json").write_text(json.dumps(summary, indent=2))
    # Only a complete recording replaces the target, so an interrupted run never leaves a half dataset.
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset directory (replaced when recording completes)")
    parser.add_argument("--tasks", nargs="+", default=["button-press-topdown-v3"], help="MetaWorld task names")
    parser.add_argument("--episodes", type=int, default=50, help="episodes to keep per task")
    parser.add_argument("--resolution", type=int, default=64, help="square frame size, divisible by 16")
    parser.add_argument("--seed-start", type=int, default=0, help="first env seed (then +1 per attempt)")
    parser.add_argument("--max-steps", type=int, default=400, help="step limit (lerobot-eval's episode_length)")
    parser.add_argument("--keep-failures", action="store_true", help="also keep episodes the expert failed")
    parser.add_argument("--no-shadows", action="store_true", help="render without shadows (faster; see above)")
    parser.add_argument("--repo-id", default=REPO_ID)
    args = parser.parse_args(argv)
    summary = record(args.root, args.tasks, args.episodes, args.resolution, args.seed_start, args.max_steps,
                     args.keep_failures, repo_id=args.repo_id, shadows=not args.no_shadows)  # fmt: skip
    for task, s in summary["tasks"].items():
        rate = "n/a" if s["expert_success_rate"] is None else f"{s['expert_success_rate']:.1f}%"
        print(f"[record] {task}: {s['episodes']} episodes kept of {s['attempts']} (expert success {rate}), "
              f"mean length {s['mean_length']:.0f} steps")  # fmt: skip
    print(f"[record] {summary['frames']} frames, seeds {summary['seed_start']}..{summary['seed_end']}, "
          f"{summary['seconds']:.0f} s -> {args.root}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
