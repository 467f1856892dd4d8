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

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..processor_dit4dit import resize_images

REPO_ID = "local/metaworld_expert"


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 with the dit4dit preprocessor's resize
    (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
    x = resize_images(x, (size, size))
    return (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def check_tasks(tasks: list[str]) -> None:
    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    unknown = [t for t in tasks if t.removeprefix("metaworld-") not in TASK_DESCRIPTIONS]
    if unknown:
        known = ", ".join(sorted(TASK_DESCRIPTIONS))
        raise ValueError(f"Unknown MetaWorld task {unknown[0]!r}. Known tasks: {known}")


def _after_env_built(marker: str, apply) -> bool:
    """Wrap `MetaworldEnv._ensure_env` so that `apply(env)` runs on every MuJoCo env built from now on, right
    after LeRobot builds it lazily and before its first frame. Returns False when `marker` is already applied.

    A wrapper of LeRobot's method (not a subclass): `lerobot-eval`'s env factory instantiates `MetaworldEnv`
    itself, so only a process-wide change reaches the envs it builds.
    """
    from lerobot.envs.metaworld import MetaworldEnv

    ensure = MetaworldEnv._ensure_env
    if marker in getattr(ensure, "_dit4dit_switches", ()):
        return False

    def ensure_and_apply(self):
        fresh = self._env is None
        ensure(self)
        if fresh:
            apply(self)

    ensure_and_apply._dit4dit_switches = (*getattr(ensure, "_dit4dit_switches", ()), marker)
    MetaworldEnv._ensure_env = ensure_and_apply
    return True


def disable_shadows() -> None:
    """Make every LeRobot MetaworldEnv built from now on in this process render without shadows.

    On a CPU renderer (EGL/llvmpipe) shadow maps are most of MetaWorld's rendering cost
    (docs/sample_efficiency_metaworld.md). Idempotent.
    """

    def no_shadows(env) -> None:
        env._env.model.light_castshadow[:] = 0

    _after_env_built("no_shadows", no_shadows)


def cap_episode_steps(limit: int) -> None:
    """Make every LeRobot MetaworldEnv created from now on in this process end its episodes after `limit`
    steps.

    LeRobot fixes MetaWorld episodes at 500 steps; a lower cap only shortens failing episodes (the experts
    here finish in under 100). Calling it again with another limit is an error rather than a silent change.
    """
    from lerobot.envs.metaworld import MetaworldEnv

    if limit < 1:
        raise ValueError(f"step limit must be >= 1, got {limit}")
    init = MetaworldEnv.__init__
    current = getattr(init, "_dit4dit_step_limit", None)
    if current is not None:
        if current != limit:
            raise ValueError(
                f"MetaWorld episodes are already capped at {current} steps in this process; asked {limit}"
            )
        return

    def capped_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._max_episode_steps = limit

    capped_init._dit4dit_step_limit = limit
    MetaworldEnv.__init__ = capped_init


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
        disable_shadows()
    root = Path(root)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    features = {
        "observation.image": {
            "dtype": "image",
            "shape": (resolution, resolution, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": (4,), "names": ["dx", "dy", "dz", "grip"]},
    }
    ds = LeRobotDataset.create(
        repo_id, fps=fps, features=features, root=partial, robot_type="sawyer", use_videos=False
    )
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

            def on_frame(obs, action, rollout=rollout):
                ds.add_frame(
                    {
                        "observation.image": resize_frame(obs["pixels"], resolution),
                        "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
                        "action": action,
                        "task": rollout.description,
                    }
                )

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
