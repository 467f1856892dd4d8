"""Helpers shared by the tests: the tiny policy config, preprocessed batches and subprocess runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_dit4dit import DiT4DiTConfig
from lerobot_dit4dit.testing.tiny_base import TINY_POLICY_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # lerobot-train, lerobot-eval, ... of this environment
IMG = 32
STATE_DIM = 4
ACTION_DIM = 4
CAMERAS = ("observation.images.front", "observation.images.wrist")
TASKS = ["move the black dot to the red disc", "move the black dot to the blue disc"]


def tiny_config(base: str, **overrides) -> DiT4DiTConfig:
    """A dit4dit config for the tiny base: two 32x32 cameras, 4-D state and action."""
    kwargs = dict(
        TINY_POLICY_OVERRIDES,
        base_model=base,
        base_model_revision=None,
        device="cpu",
        image_resolution=(IMG, IMG),
        input_features={
            **{cam: PolicyFeature(FeatureType.VISUAL, (3, IMG, IMG)) for cam in CAMERAS},
            "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))},
    )
    kwargs.update(overrides)
    return DiT4DiTConfig(**kwargs)


def train_batch(cfg: DiT4DiTConfig, batch_size: int = 2, seed: int = 0) -> dict:
    """A preprocessed training batch: images (B, T, 3, H, W) in [-1, 1], state (B, T, S),
    actions (B, H, A)."""
    g = torch.Generator().manual_seed(seed)
    t = cfg.num_video_frames
    batch = {cam: torch.rand(batch_size, t, 3, IMG, IMG, generator=g) * 2 - 1 for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, t, STATE_DIM, generator=g)
    batch["action"] = torch.randn(batch_size, cfg.chunk_size, ACTION_DIM, generator=g).clamp(-1, 1)
    batch["action_is_pad"] = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool)
    batch["task"] = TASKS[:batch_size]
    return batch


def inference_batch(batch_size: int = 2, seed: int = 1) -> dict:
    """A preprocessed observation: images (B, 3, H, W) in [-1, 1], state (B, S), task strings."""
    g = torch.Generator().manual_seed(seed)
    batch = {cam: torch.rand(batch_size, 3, IMG, IMG, generator=g) * 2 - 1 for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, STATE_DIM, generator=g)
    batch["task"] = TASKS[:batch_size]
    return batch


def offline_env(**extra: str) -> dict:
    """This process's environment with the Hub, datasets and wandb offline, plus `extra`."""
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", **extra)


def run(cmd: list[str], env: dict | None = None, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with no stdin; raise with the tail of its output when it fails."""
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env or offline_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def tiny_policy_flags(base: str, resolution: int = IMG, revision: str | None = None) -> list[str]:
    """`lerobot-train` flags for a dit4dit policy on the tiny base (`--policy.base_model` may be a hub id)."""
    flags = [f"--policy.{k}={v}" for k, v in TINY_POLICY_OVERRIDES.items()]
    return flags + [
        "--policy.type=dit4dit",
        f"--policy.base_model={base}",
        f"--policy.base_model_revision={revision or 'null'}",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        f"--policy.image_resolution=[{resolution},{resolution}]",
    ]


def dataset_flags(root, repo_id: str = "local/dit4dit_reach", batch_size: int = 4) -> list[str]:
    """`lerobot-train` flags for a local dataset, read with pyav, in this process's CPU budget."""
    return [
        f"--dataset.repo_id={repo_id}",
        f"--dataset.root={root}",
        "--dataset.video_backend=pyav",
        "--num_workers=0",
        f"--batch_size={batch_size}",
        "--log_freq=1",
        "--wandb.enable=false",
    ]


def record_linear_rows(monkeypatch) -> list[tuple[torch.Tensor, int]]:
    """Record (weight, rows) of every `F.linear` call from now on: the rows a projection actually multiplied.
    A cache hit or a gather of the speed layer shows up as a call that did not happen or had fewer rows."""
    calls: list[tuple[torch.Tensor, int]] = []
    real = torch.nn.functional.linear

    def linear(x, weight, bias=None):
        calls.append((weight, x.shape[0]))
        return real(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", linear)
    return calls


def rows_of(calls: list[tuple[torch.Tensor, int]], *modules: torch.nn.Module) -> list[int]:
    """The row counts of the recorded calls that multiplied the weight of one of `modules` (nn.Linear)."""
    return [rows for weight, rows in calls if any(weight is m.weight for m in modules)]
