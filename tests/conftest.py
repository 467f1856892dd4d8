"""Session fixtures: a tiny Cosmos-Predict2.5 base and a small LeRobotDataset, both generated offline.
Helpers live in `tests/utils.py`."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from helpers.reach_dataset import make_reach_dataset
from utils import ACTION_DIM, IMG, tiny_config

from lerobot_dit4dit import DiT4DiTPolicy
from lerobot_dit4dit.testing.tiny_base import build_tiny_cosmos_base


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="device of tests/test_device.py, checked against separate CPU runs (scripts/gpu_check.sh: cuda)",
    )


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    device = torch.device(request.config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: torch sees no CUDA device on this machine")
    return device


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    return str(build_tiny_cosmos_base(tmp_path_factory.mktemp("tiny_cosmos_base")))


@pytest.fixture(scope="session")
def reach_dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("data") / "reach"
    # Full-length episodes: most 9-frame clips (0..8 at stride 2) fit, so the video loss has real targets.
    make_reach_dataset(
        root, num_episodes=4, episode_length=24, image_size=IMG, action_dim=ACTION_DIM, stop_on_success=False
    )
    return str(root)


@pytest.fixture
def make_policy(tiny_base):
    def _make(**overrides) -> DiT4DiTPolicy:
        torch.manual_seed(0)
        return DiT4DiTPolicy(tiny_config(tiny_base, **overrides))

    return _make


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """A Hub test server (tests/hub_server.py) on 127.0.0.1 for the session; see `hub_server.hub_env`."""
    from hub_server import HubServer

    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server
