"""The training-memory estimate (`benchmarks.train_memory`): its byte counter, and its
fake-tensor run against the same training steps on real tensors at tiny width."""

import json
import re
import subprocess
import sys

import pytest
import torch
from utils import run

from benchmarks.train_memory import (
    RECIPES,
    LiveBytes,
    preset_policy_config,
    training_step_memory,
)


def test_live_bytes_counts_each_storage_once_and_frees_it():
    live = LiveBytes()
    with live:
        a = torch.empty(1000)  # 4000 bytes
        view = a[:10]  # the same storage: not counted again
        b = torch.empty(500, dtype=torch.bfloat16)  # 1000 bytes
        assert live.current == 5000
        del a, view
        assert live.current == 1000
        assert torch.zeros(()).item() == 0.0  # a real tensor keeps its value (and is freed at once)
        live.phase = "later"
        c = torch.ones(3, dtype=torch.int64)  # 24 bytes
        assert live.by_phase == {"state": 1000, "later": 24}
        live.relabel(c, "grads")
        assert live.by_phase == {"state": 1000, "later": 0, "grads": 24}
        live.phase = "forward"
        d = torch.empty(250)  # 1000 bytes beyond the persistent 1024
    assert live.peak == 5000 and live.peak_at == "state"
    assert live.phase_peaks == {"state": 5000, "later": 1024, "forward": 2024}
    assert live.activation_peak == 1000
    del b, c, d


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [(r, {}) for r in RECIPES] + [("full", {"detach_video_features": True})],
    ids=[*RECIPES, "full-detached-features"],
)
def test_fake_training_memory_counts_what_real_tensors_allocate(tiny_base, recipe, overrides):
    """Two training steps of the quickstart policy at batch 4: the fake run's peaks, per phase, are the bytes
    the same steps allocate on real tensors, to the byte. With detached features (the LIBERO presets) the
    step shares the text K/V between its two DiT forwards."""
    if recipe == "lora":
        pytest.importorskip("peft", reason="LoRA goes through LeRobot's PEFT support (the `peft` package)")
    estimates = {}
    for fake in (True, False):
        torch.manual_seed(0)
        cfg = preset_policy_config("metaworld_quickstart", tiny_base, **RECIPES[recipe], **overrides)
        estimates[fake] = training_step_memory(cfg, batch_size=4, recipe=recipe, fake=fake)
    fake, real = estimates[True], estimates[False]
    assert fake.phase_peaks == real.phase_peaks
    assert fake.activations == real.activations
    assert (fake.peak, fake.peak_phase, fake.trained_params) == (
        real.peak,
        real.peak_phase,
        real.trained_params,
    )
    assert fake.activations > 0 and fake.peak >= fake.weights + fake.activations


def test_recipes_order_the_memory_as_expected(tiny_base):
    """Checkpointing keeps fewer activations than the full fine-tune at the same state, and fewer again on
    cached latents; the frozen video DiT trains fewer parameters (at tiny width the action head is most)."""
    est = {
        r: training_step_memory(preset_policy_config("metaworld_quickstart", tiny_base, **RECIPES[r]), 4, r)
        for r in ("full", "checkpointing", "frozen-video")
    }
    assert est["checkpointing"].activations < est["full"].activations
    assert est["checkpointing"].grads_and_adamw == est["full"].grads_and_adamw
    assert est["frozen-video"].trained_params < est["full"].trained_params
    # On cached latents the frozen VAE never runs in the step; fake and real tensors still agree.
    cached = {
        fake: training_step_memory(
            preset_policy_config("metaworld_quickstart", tiny_base, **RECIPES["checkpointing"]),
            4,
            "checkpointing",
            fake=fake,
            latent_cache=True,
        )
        for fake in (True, False)
    }
    assert cached[True].phase_peaks == cached[False].phase_peaks
    assert cached[True].activations < est["checkpointing"].activations


def test_train_memory_command_writes_its_table(tiny_base, tmp_path):
    out = tmp_path / "mem.json"
    proc = run(
        [sys.executable, "-m", "benchmarks.train_memory", "--preset", "metaworld_quickstart"]
        + ["--base", tiny_base, "--batch-size", "2", "--recipes", "full", "frozen-video", "--json", str(out)],
        timeout=300,
    )
    table = json.loads(out.read_text())
    assert table["batch_size"] == 2 and list(table["recipes"]) == [
        "full fine-tune (both DiTs)",
        "frozen video DiT (training_mode=action), checkpointing",
    ]
    for title, row in table["recipes"].items():
        assert title in proc.stdout
        assert row["peak (GiB)"] >= row["forward/backward peak (GiB)"] > row["weights (GiB)"] > 0

    # --measure: the same steps on real tensors (the tiny base has DiT weights), with their times.
    measured_out = tmp_path / "measured.json"
    run(
        [sys.executable, "-m", "benchmarks.train_memory", "--preset", "metaworld_quickstart"]
        + ["--base", tiny_base, "--batch-size", "2", "--recipes", "full", "--measure"]
        + ["--json", str(measured_out)],
        timeout=300,
    )
    measured = json.loads(measured_out.read_text())
    assert table["tensors"] == "fake" and measured["tensors"] == "real, cpu"
    row = measured["recipes"]["full fine-tune (both DiTs)"]
    fake_row = table["recipes"]["full fine-tune (both DiTs)"]
    counted = ("weights (GiB)", "forward/backward peak (GiB)", "optimizer-step peak (GiB)")
    assert {k: row[k] for k in counted} == {k: fake_row[k] for k in counted}
    assert len(row["step seconds"]) == 2 and min(row["step seconds"]) > 0
    assert row["process peak RSS (MiB)"] > 0

    # Without a base that holds DiT weights there is nothing to measure: refused, naming the option.
    refused = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_memory", "--measure"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--measure needs --base" in refused.stderr


def test_checkpointed_training_keeps_no_autocast_weight_copies(tiny_base, monkeypatch):
    """With gradient checkpointing, the policy's bf16 autocast runs without its weight cache (at real width
    the cache holds 2.7 GiB of bf16 weight copies through the forward: docs/speed.md), with the same losses
    and gradients as with the cache on."""
    from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy

    def step():
        torch.manual_seed(0)
        cfg = preset_policy_config(
            "metaworld_quickstart", tiny_base, dtype="bfloat16", **RECIPES["checkpointing"]
        )
        policy = DiT4DiTPolicy(cfg).train()
        cache_on = []
        policy.video.transformer.transformer_blocks[-1].register_forward_pre_hook(
            lambda *_: cache_on.append(torch.is_autocast_cache_enabled())
        )
        b, t = 2, cfg.num_video_frames
        batch = {c: torch.rand(b, t, 3, *cfg.image_resolution) * 2 - 1 for c in cfg.cameras}
        batch["observation.state"] = torch.randn(b, t, cfg.encoded_state_dim)
        batch["action"] = torch.randn(b, cfg.chunk_size, cfg.action_dim)
        batch["task"] = ["reach the goal"] * b
        torch.manual_seed(1)
        loss, info = policy.forward(batch)
        loss.backward()
        grads = [(n, p.grad.clone()) for n, p in policy.named_parameters() if p.grad is not None]
        return set(cache_on), info, grads

    cache_on, info, grads = step()
    monkeypatch.setattr(
        DiT4DiTPolicy,
        "_autocast",
        lambda self, device: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=True),
    )
    cache_on_patched, info_cached, grads_cached = step()
    assert cache_on == {False} and cache_on_patched == {True}  # the forward and its recompute
    assert info == info_cached
    # A weight used once per step gets the same gradient. The quickstart's features are not detached, so the
    # blocks up to extract_layer (and the embeddings) are used by both forwards: the cache sums their two bf16
    # gradients before the cast to fp32, where without it they are summed in fp32, within one bf16 rounding.
    twice = re.compile(
        r"video\.transformer\.(transformer_blocks\.[0-2]\.|patch_embed|time_embed|crossattn_proj)"
    )
    for (name, a), (_, b) in zip(grads, grads_cached, strict=True):
        if twice.match(name):
            assert (a - b).abs().max() <= 2**-7 * b.abs().max(), name
        else:
            assert torch.equal(a, b), name


def test_estimate_base_holds_the_transformer_config_only(tmp_path):
    """The command's default base: the real Wan VAE, the given video-DiT config and no DiT weights; a policy
    builds from it on the meta device and the fake steps run on it."""
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

    from benchmarks.speed import REAL_TRANSFORMER
    from benchmarks.train_memory import write_estimate_base

    small = {"num_attention_heads": 2, "attention_head_dim": 32, "num_layers": 4, "adaln_lora_dim": 16}
    base = write_estimate_base(
        tmp_path / "base", {**REAL_TRANSFORMER, **small, "crossattn_proj_in_channels": 64}
    )
    assert sorted(p.name for p in (base / "transformer").iterdir()) == ["config.json"]
    assert CosmosTransformer3DModel.load_config(base, subfolder="transformer")["num_layers"] == 4
    assert AutoencoderKLWan.load_config(base, subfolder="vae")["base_dim"] == 96  # the real Wan 2.1 VAE
    cfg = preset_policy_config("metaworld_quickstart", str(base), **RECIPES["checkpointing"])
    est = training_step_memory(cfg, 2, "checkpointing")
    assert est.activations > 0 and est.peak > est.weights
