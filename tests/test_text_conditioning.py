"""Shipped text conditioning: inference on a shipped instruction never needs the text encoder."""

from __future__ import annotations

import shutil

import pytest
import torch
from utils import inference_batch, tiny_config

from lerobot_dit4dit import DiT4DiTPolicy
from lerobot_dit4dit.scripts.text_conditioning import main
from lerobot_dit4dit.text_conditioning import FILENAME, read_text_conditioning


@pytest.fixture
def trained_dir(make_policy, tmp_path):
    """A saved policy that has encoded the inference batch's two instructions (as training would)."""
    policy = make_policy()
    with torch.no_grad():
        for p in policy.video.transformer.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.video.encode_prompts(inference_batch()["task"])
    policy.save_pretrained(tmp_path / "ckpt")
    return policy, tmp_path / "ckpt"


def test_save_ships_every_instruction_seen(trained_dir):
    policy, ckpt = trained_dir
    contexts, metadata = read_text_conditioning(ckpt / FILENAME)
    assert list(contexts) == inference_batch()["task"]
    d = (
        policy.video.transformer.config.num_attention_heads
        * policy.video.transformer.config.attention_head_dim
    )
    assert all(c.shape == (policy.config.max_prompt_tokens, d) for c in contexts.values())
    assert metadata["max_prompt_tokens"] == str(policy.config.max_prompt_tokens)
    assert metadata["base_model"] == policy.config.base_model and len(metadata["projection_sha256"]) == 64


def test_inference_without_any_text_encoder(trained_dir, tiny_base, tmp_path):
    """A base with no text_encoder/ at all: shipped instructions act exactly as with the encoder; an
    instruction that is not shipped is a clear error naming it."""
    policy, ckpt = trained_dir
    base = tmp_path / "base_without_encoder"
    shutil.copytree(tiny_base, base)
    shutil.rmtree(base / "text_encoder")
    loaded = DiT4DiTPolicy.from_pretrained(ckpt, config=tiny_config(str(base)))
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    # Exact: the shipped contexts were saved from the same projection of the same two instructions that
    # `policy` computes, and both act with the same weights from there.
    assert torch.equal(
        loaded.predict_action_chunk(batch, noise=noise), policy.predict_action_chunk(batch, noise=noise)
    )
    assert not loaded.video.text_encoder_loaded and loaded.video.text_encoder_calls == 0
    with pytest.raises(FileNotFoundError, match=r"no text_encoder/.*\['stack the cups'\]"):
        loaded.predict_action_chunk({**batch, "task": ["stack the cups"] * 2})


def test_shipped_context_is_dropped_when_the_weights_change(trained_dir):
    policy, ckpt = trained_dir
    loaded = DiT4DiTPolicy.from_pretrained(ckpt)
    assert loaded.video.shipped_instructions() == inference_batch()["task"]
    with torch.no_grad():
        next(loaded.video.crossattn_proj.parameters()).mul_(1.01)  # what an optimizer step does
    assert loaded.video.shipped_instructions() == []


def test_file_for_other_weights_is_refused(trained_dir, make_policy, tmp_path):
    _, ckpt = trained_dir
    other = tmp_path / "other"
    make_policy().save_pretrained(other)  # other weights, nothing encoded: no file
    assert not (other / FILENAME).exists()
    shutil.copy(ckpt / FILENAME, other / FILENAME)
    with pytest.raises(ValueError, match="other text-projection weights"):
        DiT4DiTPolicy.from_pretrained(other)


def test_command_adds_instructions(trained_dir, capsys):
    _, ckpt = trained_dir
    main(["--checkpoint", str(ckpt), "--instructions", "stack the cups"])
    contexts, _ = read_text_conditioning(ckpt / FILENAME)
    assert list(contexts) == [*inference_batch()["task"], "stack the cups"]
    assert "3 instructions" in capsys.readouterr().out
