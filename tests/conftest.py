"""Shared fixtures: a tiny Cosmos-Predict2.5 base and a small LeRobotDataset, both generated offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_dit4dit import DiT4DiTConfig, DiT4DiTPolicy
from lerobot_dit4dit.synthetic_dataset import make_reach_dataset
from lerobot_dit4dit.tiny_base import TINY_POLICY_OVERRIDES, build_tiny_cosmos_base

IMG = 32
STATE_DIM = 4
ACTION_DIM = 4
CAMERAS = ("observation.images.front", "observation.images.wrist")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    return str(build_tiny_cosmos_base(tmp_path_factory.mktemp("tiny_cosmos_base")))


@pytest.fixture(scope="session")
def reach_dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("data") / "reach"
    make_reach_dataset(root, num_episodes=4, episode_length=24, image_size=IMG, action_dim=ACTION_DIM)
    return str(root)


def tiny_config(base: str, **overrides) -> DiT4DiTConfig:
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


@pytest.fixture
def make_policy(tiny_base):
    def _make(**overrides) -> DiT4DiTPolicy:
        torch.manual_seed(0)
        return DiT4DiTPolicy(tiny_config(tiny_base, **overrides))

    return _make


def train_batch(cfg: DiT4DiTConfig, batch_size: int = 2, seed: int = 0) -> dict:
    """A preprocessed training batch: images (B, T, 3, H, W) in [-1, 1], state (B, T, S), actions (B, H, A)."""
    g = torch.Generator().manual_seed(seed)
    t = cfg.num_video_frames
    batch = {cam: torch.rand(batch_size, t, 3, IMG, IMG, generator=g) * 2 - 1 for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, t, STATE_DIM, generator=g)
    batch["action"] = torch.randn(batch_size, cfg.chunk_size, ACTION_DIM, generator=g).clamp(-1, 1)
    batch["action_is_pad"] = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool)
    batch["task"] = ["move the black dot to the red disc", "move the black dot to the blue disc"][:batch_size]
    return batch


def inference_batch(batch_size: int = 2, seed: int = 1) -> dict:
    """A preprocessed observation: images (B, 3, H, W) in [-1, 1], state (B, S), task strings."""
    g = torch.Generator().manual_seed(seed)
    batch = {cam: torch.rand(batch_size, 3, IMG, IMG, generator=g) * 2 - 1 for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, STATE_DIM, generator=g)
    batch["task"] = ["move the black dot to the red disc", "move the black dot to the blue disc"][:batch_size]
    return batch
