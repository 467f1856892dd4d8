"""FSDP2 on CPU: dit4dit's training step with every DiT block sharded across two gloo processes.

Accelerate cannot launch FSDP on CPU: with `configs/accelerate_fsdp_cpu.yaml` (`use_cpu: true`) its launcher
runs the processes as MULTI_CPU, which is DDP, and the FSDP settings are silently unused (accelerate 1.16,
`accelerate/state.py`: only the accelerator types enter the FSDP branch). So this tests the largest part that
runs here: torch's `fully_shard` on the units the policy names (`_no_split_modules`), our loss and backward,
AdamW, the full state dict gathered and saved with `save_pretrained`, and that checkpoint loaded in one
process and acting. What remains for a GPU machine: the same run through `accelerate launch` with
`configs/accelerate_fsdp_2b.yaml`, and LeRobot's FSDP checkpoint and resume path around it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from utils import ROOT, inference_batch, offline_env

from lerobot_dit4dit import DiT4DiTPolicy

SCRIPT = ROOT / "tests" / "helpers" / "fsdp_step.py"


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tiny_base, tmp_path_factory):
    """The same 2 AdamW steps, unsharded in one process and FSDP2-sharded in two."""
    out = tmp_path_factory.mktemp("fsdp")
    env = offline_env(OMP_NUM_THREADS="1")
    alone = [sys.executable, str(SCRIPT), f"--base={tiny_base}", f"--out={out / 'alone'}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launcher.append(f"--master_port={_port()}")
    sharded = [*launcher, str(SCRIPT), f"--base={tiny_base}", f"--out={out / 'sharded'}"]
    for cmd in (alone, sharded):
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL
        )
        assert proc.returncode == 0, proc.stderr[-6000:]
    return out / "alone", out / "sharded"


def test_fsdp2_shards_every_block_of_both_dits(runs):
    """The policy's `_no_split_modules` names the block classes of both DiTs, so each block is a unit."""
    alone, sharded = runs
    units = json.loads((sharded / "sharded.json").read_text())["units"]
    policy = DiT4DiTPolicy.from_pretrained(alone / "policy")
    policy.restore_deferred_blocks()  # a lean load leaves the blocks past `extract_layer` unread
    video, action = policy.video.transformer.transformer_blocks, policy.action_head.model.transformer_blocks
    blocks = [f"video.transformer.transformer_blocks.{i}" for i in range(len(video))]
    blocks += [f"action_head.model.transformer_blocks.{i}" for i in range(len(action))]
    assert units == blocks


def test_fsdp2_training_matches_one_process(runs):
    """Two ranks on half the batch each = one process on the whole batch, within float tolerance."""
    alone, sharded = runs
    losses = [json.loads((d / "sharded.json").read_text())["losses"] for d in (alone, sharded)]
    # The sharded loss is the mean of the two halves' means: the same number summed in another order.
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-6, atol=0)
    grads = [load_file(d / "grads.safetensors") for d in (alone, sharded)]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    # fp32 sums of O(1) terms in another order (reduce-scatter of two halves against one batch).
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=0, atol=1e-6, msg=k)
    weights = [load_file(d / "policy" / "model.safetensors") for d in (alone, sharded)]
    assert weights[0].keys() == weights[1].keys()
    # AdamW divides each step by sqrt(v) + eps (1e-8): a gradient that is zero in exact arithmetic (the
    # attention key biases, which softmax ignores) is float noise of ~1e-10 on each side and moves its
    # weight by up to lr * noise / eps = 1e-5 per step (lr 1e-3); 2 steps.
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=0, atol=2e-5, msg=k)
    texts = [load_file(d / "policy" / "text_conditioning.safetensors") for d in (alone, sharded)]
    for k in texts[0]:  # projected with the gathered weights, not this rank's shards
        torch.testing.assert_close(texts[1][k], texts[0][k], rtol=0, atol=1e-5, msg=k)


def test_fsdp2_checkpoint_loads_in_one_process_and_acts(runs):
    _, sharded = runs
    policy = DiT4DiTPolicy.from_pretrained(sharded / "policy")
    batch = inference_batch(batch_size=2)
    batch["task"] = ["move the black dot to the red disc"] * 2  # shipped by the sharded run's save
    action = policy.select_action(batch)
    assert action.shape == (2, policy.config.action_dim) and torch.isfinite(action).all()
    assert policy.video.shipped_instructions() == ["move the black dot to the red disc"]
