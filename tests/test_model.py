"""Behaviour of the DiT4DiT model parts on the tiny base (same classes as Cosmos-Predict2.5-2B)."""

from __future__ import annotations

import contextlib
import json
import logging
import time

import pytest
import torch
from utils import (
    ACTION_DIM,
    CAMERAS,
    TASKS,
    inference_batch,
    record_linear_rows,
    rows_of,
    tiny_config,
    train_batch,
)

from lerobot_dit4dit import DiT4DiTConfig, DiT4DiTPolicy, fast_paths
from lerobot_dit4dit.inputs import tile_cameras


def _cond_and_prompts(policy, batch):
    video = tile_cameras(batch, policy.config, train=False)[:, :, :1]
    return policy.video.encode_video(video), policy.video.encode_prompts(batch["task"])


def test_early_exit_features_equal_full_forward(make_policy):
    policy = make_policy()
    batch = inference_batch()
    cond, prompts = _cond_and_prompts(policy, batch)
    b, c, _, h, w = cond.shape
    noise = torch.randn(b, c, policy.num_latent_frames, h, w)

    early = policy.extract_features(cond, prompts, noise=noise)

    # The same forward, run to the end, with the block output captured by a hook.
    captured = {}
    block = policy.video.transformer.transformer_blocks[policy.config.extract_layer]
    handle = block.register_forward_hook(lambda m, a, out: captured.setdefault("x", out))
    calls = []
    last = policy.video.transformer.transformer_blocks[-1]
    handle2 = last.register_forward_hook(lambda m, a, out: calls.append(1))
    try:
        policy.video(cond, noise[:, :, 1:], torch.full((b,), policy.feature_sigma), prompts, 1e-4)
    finally:
        handle.remove()
        handle2.remove()
    assert calls, "the full forward must reach the last block"
    assert early.shape == (b, policy.video.num_feature_tokens(5, 32, 64), policy.video.hidden_size)
    assert torch.equal(early, captured["x"])  # the same forward, on the same shapes, up to that block

    # ...and the early-exit forward never runs the blocks after `extract_layer`.
    calls.clear()
    handle2 = last.register_forward_hook(lambda m, a, out: calls.append(1))
    try:
        policy.extract_features(cond, prompts, noise=noise)
    finally:
        handle2.remove()
    assert not calls


def test_frame0_latent_equals_padded_clip_latent(make_policy):
    policy = make_policy()
    frame0 = torch.rand(2, 3, 1, 32, 64) * 2 - 1
    padded = torch.cat([frame0, torch.zeros(2, 3, 4, 32, 64)], dim=2)  # the official zero-padded clip
    alone = policy.video.encode_video(frame0)
    clip = policy.video.encode_video(padded)
    assert clip.shape[2] == 2 and alone.shape[2] == 1
    # Not bit-equal: the encoder runs frame 0 alone in both, but diffusers' 1x1x1 `quant_conv` then runs on 1
    # latent frame here and on 2 in the clip, conv shapes whose channel sums a CPU kernel may order
    # differently, and the normalisation multiplies that rounding by 1/std (about 25). 1e-5 of the largest
    # latent, above that rounding (about 2e-6 against float64 here); a frame 0 that saw the padding would be
    # off by far more.
    ref = clip[:, :, 0]
    torch.testing.assert_close(alone[:, :, 0], ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_latents_use_diffusers_039_inverse_std(make_policy):
    policy = make_policy()
    std = torch.tensor(policy.video.vae.config.latents_std)
    assert torch.allclose(policy.video.latents_inv_std.flatten(), 1 / std)


def test_determinism_under_fixed_noise(make_policy):
    policy = make_policy()
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    a1 = policy.predict_action_chunk(batch, noise=noise)
    a2 = policy.predict_action_chunk(batch, noise=noise)
    assert torch.equal(a1, a2)  # seeded feature noise: same observation, same features, same actions
    a3 = policy.predict_action_chunk(batch, noise=torch.randn_like(noise))
    assert not torch.equal(a1, a3)

    train = train_batch(policy.config)
    fixed = policy.draw_noise(2, generator=torch.Generator().manual_seed(0))
    policy.eval()
    l1, i1 = policy.forward(train, noise=fixed)
    l2, i2 = policy.forward(train, noise=fixed)
    assert torch.equal(l1, l2) and i1 == i2


def test_select_action_shape_and_chunk_refill(make_policy):
    policy = make_policy(n_action_steps=3)
    policy.reset()
    batch = inference_batch()
    calls = []
    original = policy.predict_action_chunk

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    policy.predict_action_chunk = counting
    actions = [policy.select_action(batch) for _ in range(7)]
    assert all(a.shape == (2, ACTION_DIM) for a in actions)
    assert len(calls) == 3  # steps 0, 3 and 6 start a new chunk
    policy.reset()
    policy.select_action(batch)
    assert len(calls) == 4


def test_select_action_executes_the_predicted_chunk_in_order(make_policy):
    policy = make_policy(n_action_steps=4)
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    chunk = policy.predict_action_chunk(batch, noise=noise)
    policy.reset()
    got = torch.stack([policy.select_action(batch, noise=noise) for _ in range(4)], dim=1)
    assert torch.equal(got, chunk[:, :4])


def test_text_embedding_cache(make_policy):
    policy = make_policy()
    video = policy.video
    assert not video.text_encoder_loaded  # lazily loaded
    e1 = video.encode_prompts(["pick the cube", "open the drawer", "pick the cube"])
    assert video.text_encoder_calls == 1
    assert torch.equal(e1[0], e1[2])  # one cache entry for the repeated instruction

    forwards = []
    handle = video.text_encoder.register_forward_hook(lambda *a: forwards.append(1))
    try:
        e2 = video.encode_prompts(["open the drawer", "pick the cube"])
        assert forwards == [] and video.text_encoder_calls == 1
        assert torch.equal(e2[0], e1[1])  # a cache hit: the stored embedding
        video.encode_prompts(["a new instruction", "pick the cube"])
        assert forwards == [1] and video.text_encoder_calls == 2
    finally:
        handle.remove()


def test_inference_never_loads_text_encoder_when_cached(make_policy):
    policy = make_policy()
    batch = inference_batch()
    policy.video.encode_prompts(batch["task"])
    policy.video.release_text_encoder()
    policy.predict_action_chunk(batch)
    assert not policy.video.text_encoder_loaded


def test_detach_controls_gradient_into_video_dit(make_policy):
    batch = None
    for detach in (True, False):
        policy = make_policy(detach_video_features=detach, training_mode="action")
        batch = batch or train_batch(policy.config)
        policy.train()
        loss, info = policy.forward(batch)
        assert set(info) == {"action_loss"}
        loss.backward()
        grads = [p.grad for p in policy.video.transformer.parameters() if p.grad is not None]
        assert bool(grads) is (not detach)
        assert any(p.grad is not None for p in policy.action_head.parameters())


def test_optim_param_groups(make_policy):
    policy = make_policy()
    groups = policy.get_optim_params()
    assert [g["lr"] for g in groups] == [1e-5, 1e-4]
    video_ids = {id(p) for p in policy.video.transformer.parameters()}
    assert {id(p) for p in groups[0]["params"]} == video_ids
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in policy.action_head.parameters()}
    frozen = {id(p) for p in policy.video.vae.parameters()}
    assert not frozen & {id(p) for g in groups for p in g["params"]}
    assert not any(p.requires_grad for p in policy.video.vae.parameters())


def test_optimizer_preset_is_lerobots_adamw_with_torchs_fused_switch(make_policy, tmp_path):
    """lerobot-train's optimizer: LeRobot's AdamW fields plus `fused` (`optimizer_fused`), which survives
    lerobot-train's own `train_config.json` save and parse (by its registered type name): a resumed run builds
    the same optimizer."""
    import draccus
    from lerobot.configs.default import DatasetConfig
    from lerobot.configs.train import TrainPipelineConfig

    policy = make_policy()
    preset = policy.config.get_optimizer_preset()
    assert preset.type == "dit4dit_adamw" and preset.fused is True
    assert preset.grad_clip_norm == policy.config.optimizer_grad_clip_norm
    opt = preset.build(policy.get_optim_params())
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is True and opt.defaults["betas"] == policy.config.optimizer_betas
    train_cfg = TrainPipelineConfig(
        dataset=DatasetConfig(repo_id="local/none"),
        policy=policy.config,
        optimizer=preset,
        scheduler=policy.config.get_scheduler_preset(),
    )
    train_cfg._save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "train_config.json").read_text())["optimizer"]
    assert saved["type"] == "dit4dit_adamw" and saved["fused"] is True
    parsed = draccus.parse(TrainPipelineConfig, config_path=tmp_path / "train_config.json", args=[])
    assert parsed.optimizer == preset
    policy.config.optimizer_fused = False
    assert policy.config.get_optimizer_preset().build(policy.get_optim_params()).defaults["fused"] is None


def test_action_loss_masks_padded_dims_and_steps(make_policy):
    policy = make_policy(training_mode="action")
    policy.eval()
    r, h = policy.config.num_action_noise_draws, policy.config.chunk_size
    batch = train_batch(policy.config)
    batch["action_is_pad"][:, -3:] = True
    seen = {}
    original = policy.action_head.loss_inputs

    def spy(*args, **kwargs):
        seen["pred_target"] = original(*args, **kwargs)
        return seen["pred_target"]

    policy.action_head.loss_inputs = spy
    loss, _ = policy.forward(batch)
    pred, target = seen["pred_target"]
    assert pred.shape == (2 * r, h, 8)  # padded to max_action_dim
    mask = torch.zeros(2 * r, h, 8)
    mask[:, : h - 3, :ACTION_DIM] = 1  # valid dims of valid steps, for every noise draw
    expected = ((pred - target) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, ((pred - target) ** 2).mean())


def test_overfit_one_batch(make_policy):
    """On one fixed batch with fixed random draws, both losses fall >= 5x within 300 steps."""
    policy = make_policy(action_dropout=0.0)
    batch = train_batch(policy.config, seed=3)
    noise = policy.draw_noise(2, generator=torch.Generator().manual_seed(0))
    noise.video_time = torch.tensor([0.3, 0.7])
    groups = policy.get_optim_params()
    for group in groups:
        group["lr"] = 2e-3
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    policy.train()
    first = None
    start = time.perf_counter()
    steps = 0
    for _ in range(300):
        steps += 1
        loss, info = policy.forward(batch, noise=noise)
        first = first or info
        opt.zero_grad()
        loss.backward()
        opt.step()
        if info["action_loss"] < first["action_loss"] / 5 and info["video_loss"] < first["video_loss"] / 5:
            break
    print(f"overfit: {steps} steps, {time.perf_counter() - start:.1f}s, {first} -> {info}")
    assert info["action_loss"] < first["action_loss"] / 5
    assert info["video_loss"] < first["video_loss"] / 5


def test_from_pretrained_round_trip(make_policy, tmp_path):
    policy = make_policy()
    # Move the trained weights away from the base so a broken load cannot pass.
    with torch.no_grad():
        for p in list(policy.video.transformer.parameters()) + list(policy.action_head.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    policy.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith(("video.transformer.", "action_head.")) for k in keys)
    assert not any("vae" in k or "text_encoder" in k for k in keys)

    loaded = DiT4DiTPolicy.from_pretrained(tmp_path)
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    assert torch.equal(
        policy.predict_action_chunk(batch, noise=noise), loaded.predict_action_chunk(batch, noise=noise)
    )


def test_from_pretrained_defers_the_blocks_the_action_path_never_runs(make_policy, tmp_path):
    """Inference loads blocks 0..extract_layer only; the rest come from the same file when training, saving or
    imagining needs them, bit-identical to a full load."""
    policy = make_policy()
    with torch.no_grad():
        for p in policy.video.transformer.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.save_pretrained(tmp_path / "ckpt")
    total = len(policy.video.transformer.transformer_blocks)
    keep = policy.config.extract_layer + 1
    assert keep < total

    def load_full(path):
        config = DiT4DiTConfig.from_pretrained(path)
        config.defer_unused_blocks = False
        return DiT4DiTPolicy.from_pretrained(path, config=config)

    lean = DiT4DiTPolicy.from_pretrained(tmp_path / "ckpt")
    full = load_full(tmp_path / "ckpt")
    assert len(lean.video.transformer.transformer_blocks) == keep and lean.deferred_blocks == total - keep
    assert len(full.video.transformer.transformer_blocks) == total and full.deferred_blocks == 0
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    # Exact: acting runs blocks 0..extract_layer only, the same weights and shapes in both.
    assert torch.equal(
        lean.predict_action_chunk(batch, noise=noise), full.predict_action_chunk(batch, noise=noise)
    )
    assert lean.deferred_blocks == total - keep  # acting never needed them

    # Training (lerobot-train asks for the optimizer groups first) brings every block back, as saved.
    n_full = sum(p.numel() for g in full.get_optim_params() for p in g["params"])
    assert sum(p.numel() for g in lean.get_optim_params() for p in g["params"]) == n_full
    assert lean.deferred_blocks == 0
    lean_sd, full_sd = lean.state_dict(), full.state_dict()
    assert lean_sd.keys() == full_sd.keys() and all(torch.equal(lean_sd[k], full_sd[k]) for k in full_sd)

    # Saving a lean policy writes every block.
    lean2 = DiT4DiTPolicy.from_pretrained(tmp_path / "ckpt")
    lean2.save_pretrained(tmp_path / "again")
    again = load_full(tmp_path / "again")
    assert all(torch.equal(again.state_dict()[k], full_sd[k]) for k in full_sd)


def test_vae_decoder_is_read_only_when_frames_are_decoded(make_policy, tiny_base):
    """Acting and training only encode: the VAE decoder stays unread until a decode, which reads it from the
    base and decodes as the whole VAE; the encoder is the whole VAE's."""
    from diffusers import AutoencoderKLWan

    policy = make_policy()
    assert not policy.video.vae_decoder_loaded
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    policy.predict_action_chunk(inference_batch(), noise=noise)
    policy.forward(train_batch(policy.config))
    assert not policy.video.vae_decoder_loaded

    whole = AutoencoderKLWan.from_pretrained(tiny_base, subfolder="vae").eval()
    own, ref = policy.video.vae.state_dict(), whole.state_dict()
    assert set(own) == {k for k in ref if not k.startswith(("decoder.", "post_quant_conv."))}
    assert all(torch.equal(own[k], ref[k]) for k in own)
    latents = torch.randn(1, policy.video.latent_channels, 2, 4, 8)
    frames = policy.video.decode_latents(latents)
    assert policy.video.vae_decoder_loaded
    with torch.no_grad():
        z = latents / policy.video.latents_inv_std + policy.video.latents_mean
        # within float rounding: the decoder's RMS norms take the fast path (`fast_paths.FastRMSNorm`)
        torch.testing.assert_close(frames, whole.decode(z, return_dict=False)[0], atol=1e-5, rtol=1e-5)
    assert make_policy(save_predicted_video=True).video.vae_decoder_loaded  # imagining asks for it up front
    assert make_policy(defer_vae_decoder=False).video.vae_decoder_loaded  # the switch of the lean load


def test_per_frame_adaln_matches_diffusers_per_token(make_policy):
    """The adaLN linears run on one row per latent frame; actions, losses and gradients equal diffusers'
    per-token modulation within float rounding."""
    policy = make_policy()
    batch, noise = inference_batch(), torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    train = train_batch(policy.config)
    rows = []
    linear = policy.video.transformer.transformer_blocks[0].norm1.linear_2
    handle = linear.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[:-1].numel()))

    def run(per_frame: bool):
        with contextlib.nullcontext() if per_frame else fast_paths.disabled("per_frame_adaln"):
            return _run()

    def _run():
        policy.train()  # predict_action_chunk leaves it in eval mode
        policy.zero_grad()
        torch.manual_seed(1)
        loss, _ = policy.forward(train)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        with torch.no_grad():
            actions = policy.predict_action_chunk(batch, noise=noise)
        return loss.detach(), grads, actions

    ref_loss, ref_grads, ref_actions = run(False)
    per_token_rows = rows[-1]
    loss, grads, actions = run(True)
    handle.remove()
    assert rows[-1] < per_token_rows  # (B, T) rows instead of (B, T*h*w)
    torch.testing.assert_close(actions, ref_actions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("camera_order", [list(CAMERAS), list(reversed(CAMERAS))])
def test_camera_order_sets_tiling(make_policy, camera_order):
    policy = make_policy(camera_order=camera_order)
    batch = inference_batch()
    video = tile_cameras(batch, policy.config, train=False)
    assert torch.equal(video[:, :, 0, :, :32], batch[camera_order[0]])
    assert torch.equal(video[:, :, 0, :, 32:], batch[camera_order[1]])


def test_model_card_names_plugin_paper_and_base(make_policy):
    policy = make_policy()
    card = str(policy.generate_model_card("local/reach", "dit4dit", None, ["extra"]))
    assert "2603.10448" in card and "lerobot_policy_dit4dit" in card
    assert policy.config.base_model in card
    assert "dit4dit" in card.split("---")[1] and "extra" in card.split("---")[1]  # tags in the YAML header


def test_gradient_checkpointing_end_to_end_gradients(make_policy):
    """With checkpointing on (video DiT and action DiT) and features not detached, the action loss reaches the
    video DiT (paper variant), with the same gradients as without checkpointing; the action DiT blocks really
    run twice (forward, then recomputed in the backward)."""
    torch.manual_seed(0)
    plain = make_policy(detach_video_features=False, action_dropout=0.0)
    torch.manual_seed(0)
    ckpt = make_policy(detach_video_features=False, action_dropout=0.0, gradient_checkpointing=True)
    assert ckpt.video.transformer.gradient_checkpointing
    batch = train_batch(plain.config)
    draws = plain.draw_noise(2, generator=torch.Generator().manual_seed(1))
    grads, block_calls = [], []
    for policy in (plain, ckpt):
        calls = []
        policy.action_head.model.transformer_blocks[0].attn1.register_forward_hook(
            lambda *a, c=calls: c.append(1)
        )
        policy.train()
        loss, _ = policy.forward(batch, noise=draws)
        loss.backward()
        block_calls.append(len(calls))
        params = [*policy.video.transformer.parameters(), *policy.action_head.parameters()]
        grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
    assert block_calls == [1, 2]
    assert ckpt.state_dict().keys() == plain.state_dict().keys()


def test_feature_sigma_default_and_bf16_rounding(make_policy):
    policy = make_policy()
    assert policy.feature_sigma == pytest.approx(200 / 201)  # the scheduler's first sigma
    rounded = make_policy(dtype="bfloat16", cast_feature_sigma_to_model_dtype=True)
    assert rounded.feature_sigma == 0.99609375  # 200/201 in bf16, as the official bf16 code feeds it
    assert make_policy(feature_sigma=0.5).feature_sigma == 0.5


def test_predicted_video_hooks(make_policy):
    """Imagined frames only when asked: latents on `last_predicted_latents`, decoded by `lerobot-eval`."""
    policy = make_policy()
    batch = inference_batch()
    last_block = policy.video.transformer.transformer_blocks[-1]
    calls = []
    handle = last_block.register_forward_hook(lambda *a: calls.append(1))
    try:
        policy.reset()
        policy.select_action(batch)
        assert calls == [] and policy.last_predicted_latents is None  # action path: early exit only

        imagining = make_policy(save_predicted_video=True, predicted_video_steps=2)
        imagining.load_state_dict(policy.state_dict())
        handle.remove()
        handle = imagining.video.transformer.transformer_blocks[-1].register_forward_hook(
            lambda *a: calls.append(1)
        )
        noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
        imagining.reset()
        a_imagining = imagining.select_action(batch, noise=noise)
        assert len(calls) == 2  # two full forwards for two Euler steps
    finally:
        handle.remove()
    policy.reset()
    # Actions unchanged, exactly: the same feature forward and head; the imagination runs after it.
    assert torch.equal(a_imagining, policy.select_action(batch, noise=noise))
    latents = imagining.last_predicted_latents
    assert latents.shape == (2, 16, 2, 4, 8) and latents.device.type == "cpu"
    frames = imagining.decode_predicted_latents(torch.cat([latents, latents], dim=2))
    assert frames.dtype == torch.uint8 and frames.shape == (
        2 * (1 + 4),
        32,
        64,
        3,
    )  # each chunk decoded alone
    single = imagining.decode_predicted_latents(latents)
    # Exact: each chunk goes through the same decode, on the same (1, 16, 2, 4, 8) shape, as `latents` alone.
    assert torch.equal(frames[:5], single) and torch.equal(frames[5:], single)


def test_bfloat16_path_trains_and_predicts(make_policy):
    """dtype=bfloat16: frozen VAE stored in bf16, trainable weights fp32 under bf16 autocast
    (the GPU recipe)."""
    policy = make_policy(dtype="bfloat16")
    assert policy.video.vae.dtype == torch.bfloat16 and policy.video.transformer.dtype == torch.float32
    policy.train()
    loss, info = policy.forward(train_batch(policy.config))
    loss.backward()
    assert torch.isfinite(loss) and set(info) == {"action_loss", "video_loss"}
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in policy.action_head.parameters())
    actions = policy.predict_action_chunk(inference_batch())
    assert actions.dtype == torch.float32 and torch.isfinite(actions).all()


def test_many_new_instructions_are_encoded_in_groups(make_policy):
    from lerobot_dit4dit.text_conditioning import TEXT_ENCODER_BATCH

    policy = make_policy()
    prompts = [f"task number {i}" for i in range(TEXT_ENCODER_BATCH + 2)]
    grouped = policy.video.encode_prompts(prompts)
    assert policy.video.text_encoder_calls == 2
    alone = make_policy().video.encode_prompts([prompts[-1]])
    torch.testing.assert_close(grouped[-1], alone[0])


@pytest.mark.parametrize("num_steps", [1, 3, 4, 7, 10, 16])
def test_euler_buckets_match_the_official_schedule(num_steps):
    from lerobot_dit4dit.flow_matching import sampling_time_to_bucket

    times = torch.tensor([1.0 + k * (-1.0 / num_steps) for k in range(num_steps)], dtype=torch.float32)
    official = [int((1 - k / num_steps) * 1000) for k in range(num_steps)]
    assert sampling_time_to_bucket(times, 1000, num_steps).tolist() == official


def test_real_time_chunking_steers_the_prefix(make_policy):
    from lerobot.policies.rtc.configuration_rtc import RTCConfig
    from lerobot.rollout.inference.rtc import supports_rtc_inference

    policy = make_policy()
    policy.eval()
    assert supports_rtc_inference(policy)  # what lerobot-rollout --inference.type=rtc checks
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    plain = policy.predict_action_chunk(batch, noise=noise)
    # Without an RTC config the RTC arguments are ignored.
    prev = torch.full((2, 6, ACTION_DIM), 0.9)
    assert torch.equal(
        plain, policy.predict_action_chunk(batch, noise=noise, inference_delay=3, prev_chunk_left_over=prev)
    )

    policy.config.rtc_config = RTCConfig(execution_horizon=6)
    policy.init_rtc_processor()
    steered = policy.predict_action_chunk(batch, noise=noise, inference_delay=3, prev_chunk_left_over=prev)
    assert (steered[:, :3] - 0.9).abs().mean() < 0.25 * (plain[:, :3] - 0.9).abs().mean()
    first_chunk = policy.predict_action_chunk(
        batch, noise=noise, inference_delay=3, prev_chunk_left_over=None
    )
    torch.testing.assert_close(first_chunk, plain)


def test_rtc_horizon_beyond_the_executed_steps_is_named(make_policy, caplog):
    """An RTC execution horizon above n_action_steps pins the executed actions to the previous chunk's plan
    (LeRobot passes the largest delay so far): the policy says so, naming both values; within it, nothing."""
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    policy = make_policy(n_action_steps=2)
    with caplog.at_level(logging.WARNING, logger="lerobot_dit4dit.modeling_dit4dit"):
        policy.config.rtc_config = RTCConfig(execution_horizon=2)
        policy.init_rtc_processor()
        assert not caplog.records
        policy.config.rtc_config = RTCConfig()  # LeRobot's default horizon, 10
        policy.init_rtc_processor()
    (record,) = caplog.records
    assert "execution_horizon=10" in record.getMessage() and "n_action_steps=2" in record.getMessage()
    assert "--inference.rtc.execution_horizon=2" in record.getMessage()


def test_feature_kv_once_per_chunk_and_text_kv_once_per_instruction(make_policy, monkeypatch):
    """Inference caches (`fast_paths.KeyedOutput`): the action DiT projects the video features to K/V once per
    chunk, not once per Euler step; the video DiT projects an instruction's text once, not once per chunk (the
    key is the instruction key, not a tensor: a copied batch still hits). The actions and imagined latents are
    bit-identical to the uncached computation (a hit returns what the same call computed)."""
    policy = make_policy(num_inference_steps=6, save_predicted_video=True, predicted_video_steps=2)
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    feature_k = policy.action_head.cross_attention_blocks()[0].attn1.to_k
    text_k = policy.video.transformer.transformer_blocks[0].attn2.to_k
    calls = record_linear_rows(monkeypatch)
    copies = [{k: v.clone() if torch.is_tensor(v) else list(v) for k, v in batch.items()} for _ in range(3)]
    chunks = [policy.predict_action_chunk(copy, noise=noise) for copy in copies]
    latents = policy.last_predicted_latents
    assert len(rows_of(calls, feature_k)) == 3  # one per chunk (6 Euler steps each)
    assert len(rows_of(calls, text_k)) == 1  # the feature forward and the imagination of 3 chunks share one
    calls.clear()
    with fast_paths.disabled("text_kv_cache", "action_kv_cache"):
        uncached = policy.predict_action_chunk(batch, noise=noise)
    # Exact: a cache hit returns the output of the same projection, on the same shapes, that the uncached
    # path computes again.
    assert all(torch.equal(c, uncached) for c in chunks)
    assert torch.equal(policy.last_predicted_latents, latents)
    assert len(rows_of(calls, feature_k)) == 6 and len(rows_of(calls, text_k)) > 1
    calls.clear()
    policy.predict_action_chunk({**batch, "task": [TASKS[1], TASKS[0]]}, noise=noise)
    assert len(rows_of(calls, text_k)) == 1  # other instructions: another key, projected again


def test_action_loss_projects_each_samples_features_once(make_policy):
    """The action loss's r noise draws per sample share that sample's (S_f, D_f) features: the head's
    cross-attention projects them to K/V once per sample, not once per draw. Predictions and gradients equal
    the path that repeats the features r times (diffusers' own processor), within fp32 rounding."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from lerobot_dit4dit.action_head import SharedContextAttnProcessor

    policy = make_policy(action_dropout=0.0)
    head = policy.action_head.train()
    cfg = policy.config
    b, r, h = 2, cfg.num_action_noise_draws, cfg.chunk_size
    attn = head.cross_attention_blocks()[0].attn1
    g = torch.Generator().manual_seed(0)
    features = torch.randn(b, 24, attn.cross_attention_dim, generator=g)
    actions = torch.randn(r * b, h, cfg.max_action_dim, generator=g)
    state = torch.randn(r * b, cfg.max_state_dim, generator=g)
    eps, t = torch.randn(r * b, h, cfg.max_action_dim, generator=g), torch.rand(r * b, generator=g)
    assert isinstance(attn.processor, SharedContextAttnProcessor)
    projected_rows = []
    attn.to_k.register_forward_hook(lambda _m, args, _out: projected_rows.append(args[0].shape[0]))

    def pred_and_grads(feats, processor=None):
        head.zero_grad(set_to_none=True)
        if processor is not None:
            for block in head.cross_attention_blocks():
                block.attn1.set_processor(processor)
        pred, target = head.loss_inputs(actions, state, feats, eps, t)
        ((pred - target) ** 2).mean().backward()
        return pred.detach(), {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}

    shared, shared_grads = pred_and_grads(features)
    assert projected_rows == [b]
    repeated, repeated_grads = pred_and_grads(features.repeat(r, 1, 1), AttnProcessor2_0())
    assert projected_rows == [b, r * b]
    torch.testing.assert_close(shared, repeated, atol=1e-6, rtol=1e-5)
    assert shared_grads.keys() == repeated_grads.keys() and any(".to_k." in n for n in shared_grads)
    for name, grad in shared_grads.items():
        torch.testing.assert_close(grad, repeated_grads[name], atol=1e-6, rtol=1e-4, msg=name)

    SharedContextAttnProcessor.install(attn)
    with pytest.raises(ValueError, match="3 query rows .* cannot share 2 context rows"):
        attn(torch.randn(3, h + 1, attn.query_dim), encoder_hidden_states=features)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_training_step_projects_the_instruction_once_for_both_forwards(make_policy, monkeypatch, dtype):
    """Joint training with detached features: the no-grad feature forward reuses the text K/V that the
    video-loss forward computed, so block 0 projects the instruction once per step, not twice, also under
    bf16 autocast (where the context is bf16 and the master weights fp32). The losses and every gradient equal
    those of projecting it in each forward."""
    policy = make_policy(action_dropout=0.0, dtype=dtype)
    assert policy.config.training_mode == "joint" and policy.config.detach_video_features
    policy.train()
    batch = train_batch(policy.config, seed=5)
    noise = policy.draw_noise(2, generator=torch.Generator().manual_seed(1))
    recorded = record_linear_rows(monkeypatch)
    text_k = policy.video.transformer.transformer_blocks[0].attn2.to_k

    def step():
        policy.zero_grad(set_to_none=True)
        loss, info = policy.forward(batch, noise=noise)
        loss.backward()
        return info, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    shared_info, shared_grads = step()
    assert len(rows_of(recorded, text_k)) == 1
    with fast_paths.disabled("shared_text_kv"):
        info, grads = step()
    assert len(rows_of(recorded, text_k)) == 3  # the video-loss and the feature forward: one projection each
    assert shared_info == info
    assert shared_grads.keys() == grads.keys() and any("attn2.to_k" in n for n in grads)
    # Exact: a reused K/V is the output of the very same Linear call on the same input, so every op after it
    # runs on identical values.
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("checkpointing", "dtype"), [(False, "float32"), (True, "float32"), (True, "bfloat16")]
)
def test_training_step_projects_each_distinct_instruction_once(
    make_policy, monkeypatch, checkpointing, dtype
):
    """A batch that repeats an instruction: `crossattn_proj` and every block's text K/V run on its distinct
    instructions only and are gathered per sample, also when a checkpointed block recomputes its forward in
    the backward pass. The losses and every gradient equal those of projecting every sample within fp32
    rounding (within bf16 rounding under bf16 autocast): gradients are summed per instruction instead of per
    sample."""
    projected = record_linear_rows(monkeypatch)  # (weight, rows): the rows a projection actually multiplied

    def step(policy):
        policy.train()
        batch = train_batch(policy.config, batch_size=3, seed=5)
        batch["task"] = [TASKS[0], TASKS[1], TASKS[0]]
        noise = policy.draw_noise(3, generator=torch.Generator().manual_seed(1))
        projected.clear()
        loss, info = policy.forward(batch, noise=noise)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        blocks = policy.video.transformer.transformer_blocks
        watched = (blocks[0].attn2.to_k, blocks[-1].attn2.to_v)
        rows = rows_of(projected, *watched)
        proj_rows = rows_of(projected, policy.video.crossattn_proj[0])
        return info, grads, rows, proj_rows

    per_sample = make_policy(action_dropout=0.0, gradient_checkpointing=checkpointing, dtype=dtype)
    with fast_paths.disabled("instruction_gather"):  # diffusers' projections, on every sample's copy
        info, grads, rows, proj_rows = step(per_sample)
    assert set(rows) == {3} and proj_rows == [3]
    gathered = make_policy(action_dropout=0.0, gradient_checkpointing=checkpointing, dtype=dtype)
    gathered_info, gathered_grads, rows, proj_rows = step(gathered)
    # Block 0 in the video-loss forward (and its recomputation), the last block there too; 2 distinct rows.
    assert set(rows) == {2} and len(rows) == (4 if checkpointing else 2) and proj_rows == [2]
    assert gathered_info.keys() == info.keys()
    for key, value in info.items():
        assert gathered_info[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert gathered_grads.keys() == grads.keys() and any("attn2.to_k" in n for n in grads)
    # fp32: rounding of the sums. bf16: the gradient reaching a gathered K/V row is summed over its samples in
    # bf16 (index_select's backward) before the weight-gradient matmul: within bf16 rounding of the largest.
    for name, grad in grads.items():
        atol = 1e-6 if dtype == "float32" else 2**-8 * grad.abs().max().item()
        rtol = 1e-4 if dtype == "float32" else 2**-7
        torch.testing.assert_close(
            gathered_grads[name], grad, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_distinct_rows_inside_a_wrapper_gather_once():
    """A hooked layer inside a hooked wrapper (a PEFT LoRA layer around a hooked `to_k`): the wrapper projects
    the distinct rows and gathers once; the inner layer sees the rows as a plain input. With the gather unset,
    or an input of another row count, everything runs as before."""
    from torch import nn

    class Wrapper(nn.Module):  # PEFT's shape: the base layer and a branch on the same input, added
        def __init__(self, base: nn.Linear):
            super().__init__()
            self.base, self.branch = base, nn.Linear(4, 3, bias=False)

        def forward(self, x):
            return self.base(x) + self.branch(x)

    torch.manual_seed(0)
    base = nn.Linear(4, 3)
    gather = fast_paths.RowGather()
    assert fast_paths.install_row_gather([base], gather) == 1
    wrapper = Wrapper(base)
    assert fast_paths.install_row_gather([wrapper, base], gather) == 1  # base already hooked: not twice
    rows, index = torch.randn(2, 5, 4), torch.tensor([0, 1, 1, 0])
    expanded = rows.index_select(0, index)
    seen = []
    base.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    plain = wrapper(expanded)
    assert seen == [4]
    gather.set(index, rows=2)
    gathered = wrapper(rows)
    assert seen == [4, 2] and gathered.shape == plain.shape
    # Different computations (a matmul on 2 rows then a gather, against one on 4 rows): equal up to fp32
    # rounding, whose size depends on the CPU's BLAS kernel; 1e-6 is a few ulps of these O(1) values.
    torch.testing.assert_close(gathered, plain, atol=1e-6, rtol=1e-6)
    assert wrapper(expanded).shape == (4, 5, 3)  # another row count: not gathered
    gather.set(None)
    torch.testing.assert_close(base(rows), rows @ base.weight.T + base.bias, atol=1e-6, rtol=1e-6)


def _assert_compiled_modules(policy) -> None:
    """Every video-DiT block and the action DiT are `nn.Module.compile()`d in place."""
    modules = [*policy.video.transformer.transformer_blocks, policy.action_head.model]
    assert all(m._compiled_call_impl is not None for m in modules), [type(m).__name__ for m in modules]


def _dynamo_graphs(call):
    """Run `call` with dynamo's caches and counters cleared; return its result and the number of graphs
    dynamo compiled during it (0 when everything ran eagerly)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    result = call()
    return result, counters["stats"]["unique_graphs"]


def test_compile_model_matches_eager(make_policy):
    """compile_model=True: torch.compile in place (same state_dict keys), and a compiled call really compiles
    graphs (dynamo's counters), with actions within rounding of eager."""
    eager = make_policy()
    compiled = make_policy(compile_model=True)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    compiled.load_state_dict(eager.state_dict())
    _assert_compiled_modules(compiled)
    eager.eval()
    batch = inference_batch()
    noise = torch.randn(2, eager.config.chunk_size, eager.config.max_action_dim)
    actions, graphs = _dynamo_graphs(lambda: compiled.predict_action_chunk(batch, noise=noise))
    assert graphs > 0, "compile_model=True ran without compiling a graph"
    # Inductor's fused kernels round differently from eager's: fp32 rounding, not bit equality.
    torch.testing.assert_close(actions, eager.predict_action_chunk(batch, noise=noise), atol=1e-5, rtol=1e-5)


def test_compiled_training_with_checkpointing_matches_eager(make_policy):
    """compile_model=True with gradient checkpointing: a training step on a batch that repeats an instruction
    (the gather path) compiles graphs (dynamo's counters) and gives the losses and gradients of eager training
    within fp32 rounding. The compiled
    video-DiT blocks are recomputed in the backward pass, so both passes must run the same graph."""

    def step(policy):
        policy.train()
        batch = train_batch(policy.config, batch_size=3, seed=5)
        batch["task"] = [TASKS[0], TASKS[1], TASKS[0]]
        loss, info = policy.forward(
            batch, noise=policy.draw_noise(3, generator=torch.Generator().manual_seed(1))
        )
        loss.backward()
        return info, {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}

    eager = make_policy(action_dropout=0.0, gradient_checkpointing=True)
    compiled = make_policy(action_dropout=0.0, gradient_checkpointing=True, compile_model=True)
    compiled.load_state_dict(eager.state_dict())
    _assert_compiled_modules(compiled)
    info, grads = step(eager)
    (compiled_info, compiled_grads), graphs = _dynamo_graphs(lambda: step(compiled))
    assert graphs > 0, "compile_model=True trained without compiling a graph"
    assert compiled_info.keys() == info.keys() == {"action_loss", "video_loss"}
    for key, value in info.items():
        assert compiled_info[key] == pytest.approx(value, rel=1e-5), key
    assert compiled_grads.keys() == grads.keys()
    # Absolute against the largest gradient of the model: some gradients are 0 up to rounding (a key bias
    # shifts every score of a query equally), and their rounding differs between the two kernels.
    atol = 1e-5 * max(g.abs().max().item() for g in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(
            compiled_grads[name], grad, atol=atol, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_loading_builds_the_video_dit_without_random_init(make_policy, tiny_base, tmp_path):
    """from_pretrained builds the video DiT on the meta device and assigns the checkpoint's tensors: no random
    initialisation, no second copy; the loaded policy has no meta tensors left and trains as before."""
    from lerobot_dit4dit.video_backbone import CosmosVideoBackbone

    empty = CosmosVideoBackbone(tiny_base, load_transformer_weights=False)
    assert all(p.is_meta for p in empty.transformer.parameters())
    policy = make_policy()
    policy.save_pretrained(tmp_path)
    loaded = DiT4DiTPolicy.from_pretrained(tmp_path)
    assert not any(t.is_meta for t in loaded.state_dict().values())
    assert all(p.requires_grad for p in loaded.video.transformer.parameters())
    for key, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_single_frame_vae_fast_path_matches_diffusers(make_policy):
    """Frame 0 goes through 2D convs with the causal kernels' last temporal slice; latents match diffusers'
    3D convs over the zero padding within float rounding."""
    import copy

    from diffusers import AutoencoderKLWan

    policy = make_policy()
    plain = AutoencoderKLWan.from_config(policy.video.vae.config)
    policy.video.load_vae_decoder()
    plain.load_state_dict(copy.deepcopy(policy.video.vae.state_dict()))
    frame = torch.rand(2, 3, 1, 32, 64) * 2 - 1
    with torch.no_grad():
        fast = policy.video.vae.encode(frame).latent_dist.mode()
        reference = plain.encode(frame).latent_dist.mode()
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_vae_rms_norms_match_diffusers(make_policy, dtype):
    """The VAE's RMS norms normalise by the summed squares (diffusers' F.normalize is slow on CPU): a 5-frame
    clip encodes, and its frames decode, to diffusers' values within float rounding, in fp32 and bf16."""
    import copy

    from diffusers import AutoencoderKLWan
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    policy = make_policy()
    policy.video.load_vae_decoder()
    vae = policy.video.vae.to(dtype)
    norms = [m for m in vae.modules() if isinstance(m, WanRMS_norm)]
    assert norms and all(fast_paths.get_hook(m, "dit4dit_fast_rms_norm") for m in norms)
    assert fast_paths.install_vae_fast_paths(vae) == 0  # already hooked, not twice
    plain = AutoencoderKLWan.from_config(vae.config).to(dtype)
    plain.load_state_dict(copy.deepcopy(vae.state_dict()))
    clip = (torch.rand(2, 3, 5, 32, 64) * 2 - 1).to(dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    with torch.no_grad():
        fast, reference = vae.encode(clip).latent_dist.mode(), plain.encode(clip).latent_dist.mode()
        torch.testing.assert_close(fast, reference, **tol)
        torch.testing.assert_close(vae.decode(reference).sample, plain.decode(reference).sample, **tol)
        with fast_paths.disabled("fast_rms_norm", "single_frame_conv"):
            # Switched off, the hooked VAE runs diffusers' own forwards: the same ops, the same values.
            assert torch.equal(vae.encode(clip).latent_dist.mode(), reference)


def test_fast_vae_rms_norm_holds_no_more_memory_than_diffusers():
    """The fast RMS norm's peak of live bytes on a bf16 input equals diffusers' (its fp32 copy is freed before
    the cast back): found by `benchmarks.train_memory`, where it once added 0.28 GiB to a real-width step."""
    import copy

    from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

    from benchmarks.train_memory import LiveBytes

    plain = WanRMS_norm(16, images=False).to(torch.bfloat16)
    fast = copy.deepcopy(plain)
    assert fast_paths.install_vae_fast_paths(fast) == 1
    x = torch.randn(2, 16, 3, 8, 8, dtype=torch.bfloat16)
    peaks = []
    for norm in (plain, fast):
        live = LiveBytes()
        with torch.no_grad(), live:
            norm(x)
        peaks.append(live.peak)
    assert peaks[0] == peaks[1] > 0
    with torch.no_grad(), fast_paths.disabled("fast_rms_norm"):
        assert torch.equal(fast(x), plain(x))  # switched off: diffusers' forward, the same ops


def test_inference_mode_as_lerobot_eval_runs_it(make_policy):
    """lerobot-eval and lerobot-rollout act under torch.inference_mode(): the caches must work there too
    (inference tensors have no version counter), with the same actions as under no_grad."""
    policy = make_policy(save_predicted_video=True, predicted_video_steps=2)
    batch = inference_batch()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    with torch.no_grad():
        expected = policy.predict_action_chunk(batch, noise=noise)
    with torch.inference_mode():
        first = policy.predict_action_chunk(batch, noise=noise)
        again = policy.predict_action_chunk(batch, noise=noise)
    # Exact: the same kernels on the same shapes; inference mode only drops autograd's bookkeeping.
    assert torch.equal(first, expected) and torch.equal(again, expected)


def test_bf16_weights_cast_once_for_inference(make_policy, caplog):
    """dtype=bfloat16: a process that only acts casts the trained weights to bf16 once (no per-call autocast
    copies); actions stay within bf16 rounding of the fp32-weights-under-autocast path; a process that trained
    keeps fp32 master weights; training after a cast goes back to fp32, with a warning."""
    import logging

    acting = make_policy(dtype="bfloat16")
    reference = make_policy(dtype="bfloat16")
    reference.load_state_dict(acting.state_dict())
    reference.weights.training_forwards = 1  # as in lerobot-train: fp32 weights under autocast, never cast
    batch = inference_batch()
    noise = torch.randn(2, acting.config.chunk_size, acting.config.max_action_dim)
    cast = acting.predict_action_chunk(batch, noise=noise)
    autocast = reference.predict_action_chunk(batch, noise=noise)
    assert acting.video.transformer.dtype == torch.bfloat16
    assert next(acting.action_head.parameters()).dtype == torch.bfloat16
    assert reference.video.transformer.dtype == torch.float32
    assert cast.dtype == torch.float32 and torch.isfinite(cast).all()
    torch.testing.assert_close(cast, autocast, atol=0.1, rtol=0.05)  # bf16 has 8 bits of mantissa
    with caplog.at_level(logging.WARNING):
        acting.train()
    assert acting.video.transformer.dtype == torch.float32 and "cast to bfloat16 for inference" in caplog.text


def test_read_checkpoint_reopens_the_file_and_keeps_the_order(tmp_path, monkeypatch):
    """Checkpoints are read through `read_checkpoint`, which closes and reopens the safetensors handle after
    every `reopen_bytes` (read pages stay mapped, in RSS, while a handle is open): every requested tensor
    comes back exactly, in the order asked, and a small budget opens the file again."""
    from safetensors.torch import save_file

    import lerobot_dit4dit.checkpointing as modeling

    tensors = {f"t{i}": torch.randn(64, 16) for i in range(6)}  # 4 KiB each
    tensors["n"] = torch.arange(5)
    path = str(tmp_path / "m.safetensors")
    save_file(tensors, path)
    opened = []
    real_open = modeling.safe_open
    monkeypatch.setattr(modeling, "safe_open", lambda *a, **k: opened.append(1) or real_open(*a, **k))

    names = ["t3", "n", "t0", "t5"]
    got = list(modeling.read_checkpoint(path, names, reopen_bytes=8192))
    assert [k for k, _ in got] == names
    assert all(torch.equal(v, tensors[k]) for k, v in got)
    assert len(opened) == 2  # the first handle reads up to 8 KiB (t3, n, t0), the second t5
    opened.clear()
    assert dict(modeling.read_checkpoint(path)).keys() == tensors.keys()
    assert len(opened) == 2  # the key listing, then one handle under the default budget


def test_bf16_checkpoint_loads_straight_into_bf16(make_policy, tmp_path, caplog):
    """from_pretrained with dtype=bfloat16 assigns the weights in bf16 (no fp32 copy of the video DiT), acts
    as the cast-once path does, and still trains and saves from the checkpoint's exact fp32 weights."""
    import logging

    from safetensors.torch import load_file

    policy = make_policy()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.save_pretrained(tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "model.safetensors")

    def load(dtype):
        config = DiT4DiTConfig.from_pretrained(tmp_path / "ckpt")
        config.dtype = dtype
        return DiT4DiTPolicy.from_pretrained(tmp_path / "ckpt", config=config)

    lean = load("bfloat16")
    assert lean.video.transformer.dtype == torch.bfloat16  # before any inference
    assert next(lean.action_head.parameters()).dtype == torch.bfloat16
    reference = make_policy(dtype="bfloat16")  # fp32 weights, cast once at its first inference
    reference.load_state_dict(saved, strict=False)
    batch, noise = inference_batch(), torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    # Exact: both hold the same fp32 -> bf16 cast of the same weights and act with the same computation.
    assert torch.equal(
        lean.predict_action_chunk(batch, noise=noise), reference.predict_action_chunk(batch, noise=noise)
    )

    lean.save_pretrained(tmp_path / "again")  # never trained: the checkpoint's fp32 weights, bit for bit
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert again.keys() == saved.keys() and all(torch.equal(again[k], saved[k]) for k in saved)

    params = [p for g in lean.get_optim_params() for p in g["params"]]
    with caplog.at_level(logging.WARNING):
        lean.train()
    assert "rounding" not in caplog.text
    assert all(p.dtype == torch.float32 for p in params)  # the optimizer's parameters, now fp32 in place
    trained = {k: v for k, v in lean.state_dict().items() if k in saved}
    assert trained.keys() == saved.keys() and all(torch.equal(trained[k], saved[k]) for k in saved)

    # The streamed bf16 load checks as strictly as the fp32 one: keys before reading, NaN/Inf per tensor.
    from safetensors.torch import save_file

    key = next(k for k in saved if k.startswith("video.transformer.transformer_blocks.0."))
    for damaged, match in (
        ({**saved, key: torch.full_like(saved[key], float("nan"))}, "NaN/Inf in 1 tensors"),
        ({**saved, "video.transformer.bogus": torch.zeros(2)}, "unexpected keys"),
        ({k: v for k, v in saved.items() if k != key}, "missing keys"),
    ):
        save_file(damaged, tmp_path / "ckpt" / "model.safetensors")
        with pytest.raises(ValueError, match=match):
            load("bfloat16")


def test_min_normalization_range_widens_only_narrow_dims(tiny_base):
    """`min_normalization_range`: a dimension whose min/max span less than it is normalised over that range
    (around its centre), so its jitter stays small in [-1, 1]; wider dimensions keep the dataset's stats, and
    the postprocessor inverts the same widened stats."""
    from lerobot_dit4dit import make_dit4dit_pre_post_processors

    low, high = -torch.ones(ACTION_DIM), torch.ones(ACTION_DIM)
    low[0], high[0] = 0.50, 0.502  # a held joint: 0.002 of jitter
    stats = {k: {"min": low, "max": high} for k in ("observation.state", "action")}
    base = vars(tiny_config(tiny_base))
    plain, _ = make_dit4dit_pre_post_processors(DiT4DiTConfig(**base), dataset_stats=stats)
    pre, post = make_dit4dit_pre_post_processors(
        DiT4DiTConfig(**{**base, "min_normalization_range": 0.1}), dataset_stats=stats
    )
    batch = {k: (v + 1) / 2 if k in CAMERAS else v for k, v in train_batch(tiny_config(tiny_base)).items()}
    batch["action"][..., 0] = 0.502
    batch["observation.state"][..., 0] = 0.502
    out, ref = pre(dict(batch)), plain(dict(batch))
    torch.testing.assert_close(ref["action"][..., 0], torch.ones_like(ref["action"][..., 0]))  # stretched
    torch.testing.assert_close(out["action"][..., 0], torch.full_like(out["action"][..., 0], 0.02))
    state = out["observation.state"][..., 0]
    torch.testing.assert_close(state, torch.full_like(state, 0.02))
    torch.testing.assert_close(out["action"][..., 1:], ref["action"][..., 1:])  # wide dims untouched
    torch.testing.assert_close(post(out["action"]), batch["action"])


def test_relative_actions_round_trip(tiny_base):
    """`use_relative_actions`: LeRobot's relative step turns a training chunk into action - current state
    (from (B, T, S) training states), and the postprocessor adds the state of the last observation back."""
    from lerobot_dit4dit import make_dit4dit_pre_post_processors

    stats = {
        "observation.state": {"min": -torch.ones(ACTION_DIM) * 2, "max": torch.ones(ACTION_DIM) * 2},
        "action": {"min": -torch.ones(ACTION_DIM), "max": torch.ones(ACTION_DIM)},
    }
    cfg = DiT4DiTConfig(**{**vars(tiny_config(tiny_base)), "use_relative_actions": True})
    pre, post = make_dit4dit_pre_post_processors(cfg, dataset_stats=stats)
    g = torch.Generator().manual_seed(0)
    batch = {k: (v + 1) / 2 if k in CAMERAS else v for k, v in train_batch(cfg).items()}
    batch["observation.state"] = torch.rand(2, cfg.num_video_frames, ACTION_DIM, generator=g) - 0.5
    out = pre(batch)
    expected = batch["action"] - batch["observation.state"][:, :1]  # MIN_MAX over [-1, 1] is the identity
    torch.testing.assert_close(out["action"], expected)
    assert out["observation.state"].shape == (2, ACTION_DIM)  # the current state only
    torch.testing.assert_close(post(out["action"]), batch["action"])
    with pytest.raises(ValueError, match="use_relative_actions"):
        bad = DiT4DiTConfig(**{**vars(tiny_config(tiny_base)), "use_relative_actions": True})
        bad.output_features = {"action": type(bad.output_features["action"])(bad.action_feature.type, (8,))}
        make_dit4dit_pre_post_processors(bad, dataset_stats=stats)


def test_feature_position_embedding_tells_the_head_where_each_feature_is(make_policy, tmp_path):
    """Cosmos features carry no absolute position (RoPE only) and the head's cross-attention adds none:
    without the table, shuffling the feature tokens leaves the velocity unchanged; with it, it does not."""
    batch = inference_batch()
    tokens = 16  # 2 latent frames x (32 / 16) x (2 * 32 / 16) for two 32-px cameras
    features = torch.randn(2, tokens, 64)
    perm = torch.randperm(tokens)
    actions, buckets = torch.randn(2, 8, 8), torch.tensor([100, 900])

    def shuffle_effect(policy) -> float:
        head = policy.action_head.eval()
        state_tokens = head.state_encoder(torch.randn(2, head.state_encoder.layer1.in_features)).unsqueeze(1)
        v = head.velocity(actions, buckets, state_tokens, head.with_feature_positions(features))
        v_perm = head.velocity(actions, buckets, state_tokens, head.with_feature_positions(features[:, perm]))
        return (v - v_perm).abs().max().item()

    plain, positioned = make_policy(), make_policy(feature_position_embedding_size=32)
    assert "action_head.feature_position_embedding.weight" not in plain.state_dict()  # the official layout
    assert positioned.action_head.feature_position_embedding.weight.shape == (32, 64)
    assert shuffle_effect(plain) < 1e-5
    assert shuffle_effect(positioned) > 1e-3

    # Trained with the rest of the head, saved and loaded back through from_pretrained.
    with torch.no_grad():
        positioned.action_head.feature_position_embedding.weight.add_(1.0)
    positioned.save_pretrained(tmp_path)
    loaded = DiT4DiTPolicy.from_pretrained(tmp_path)
    assert torch.equal(
        loaded.action_head.feature_position_embedding.weight,
        positioned.action_head.feature_position_embedding.weight,
    )
    noise = torch.randn(2, positioned.config.chunk_size, positioned.config.max_action_dim)
    assert torch.equal(
        positioned.predict_action_chunk(batch, noise=noise), loaded.predict_action_chunk(batch, noise=noise)
    )

    with pytest.raises(ValueError, match=r"16 tokens but feature_position_embedding_size is 4; .* least 16"):
        make_policy(feature_position_embedding_size=4).predict_action_chunk(batch)
    with pytest.raises(ValueError, match="feature_position_embedding_size=-1"):
        make_policy(feature_position_embedding_size=-1)


def test_action_feature_frames_current_keeps_only_the_current_frames_tokens(make_policy):
    """ "current" hands the head the conditioning frame's tokens of the same feature forward (the first
    h * w of the frame-major sequence), in training and at inference; anything else is refused by name."""
    every, current = make_policy(), make_policy(action_feature_frames="current")
    current.load_state_dict(every.state_dict())
    batch = inference_batch()
    cond = torch.randn(2, 16, 1, 4, 8)  # two 32-px cameras side by side: a 4 x 8 latent
    prompts = every.video.encode_prompts(["pick", "place"])
    noise = torch.randn(2, 16, every.num_latent_frames, 4, 8)
    with torch.no_grad():
        all_tokens = every.extract_features(cond, prompts, noise=noise)
        own = current.extract_features(cond, prompts, noise=noise)
    per_frame = all_tokens.shape[1] // every.num_latent_frames
    assert every.num_latent_frames > 1 and own.shape == (2, per_frame, all_tokens.shape[2])
    torch.testing.assert_close(own, all_tokens[:, :per_frame])

    # The whole policy runs on the shorter sequence (a position table sized for it is enough).
    sized = make_policy(action_feature_frames="current", feature_position_embedding_size=per_frame)
    assert sized.predict_action_chunk(batch).shape == (2, sized.config.chunk_size, ACTION_DIM)
    loss, parts = sized.forward(train_batch(sized.config))
    assert torch.isfinite(loss) and parts["action_loss"] > 0
    noise = torch.randn(2, every.config.chunk_size, every.config.max_action_dim)
    assert not torch.equal(
        every.predict_action_chunk(batch, noise=noise), current.predict_action_chunk(batch, noise=noise)
    )
    with pytest.raises(ValueError, match="action_feature_frames='future'"):
        make_policy(action_feature_frames="future")


def test_state_dropout_zeroes_the_state_token_in_training_only(make_policy):
    """With state_dropout_prob close to 1 the training loss no longer depends on the state; in eval, and with
    the default 0, it does."""
    cfg_batch = train_batch(make_policy().config)
    other_state = {**cfg_batch, "observation.state": cfg_batch["observation.state"] + 3.0}

    def losses(policy, train: bool) -> tuple[float, float]:
        policy.train(train)
        out = []
        for batch in (cfg_batch, other_state):
            noise = policy.draw_noise(2, torch.Generator().manual_seed(0))
            torch.manual_seed(0)  # the same dropout draws for both states
            with torch.no_grad():
                out.append(policy.forward(batch, noise=noise)[1]["action_loss"])
        return out[0], out[1]

    dropped = make_policy(state_dropout_prob=0.999999)
    a, b = losses(dropped, train=True)
    assert a == b
    a, b = losses(dropped, train=False)
    assert a != b
    a, b = losses(make_policy(), train=True)
    assert a != b
    with pytest.raises(ValueError, match="state_dropout_prob=1.0"):
        make_policy(state_dropout_prob=1.0)


def test_checkpoint_in_served_dtype_is_mapped_not_copied(make_policy, tmp_path, monkeypatch):
    """`checkpoint_dtype=bfloat16` writes bf16 weights; `from_pretrained` in bf16 then keeps them mapped from
    the file (`map_weights`) instead of copying: the policy acts exactly as a copying load does, a write to a
    weight never reaches the file, saving over the mapped file leaves the policy's weights alone, a failed
    save leaves the old file whole, and `train()` reads the file's values back in fp32."""
    from pathlib import Path

    from safetensors.torch import load_file

    from lerobot_dit4dit import checkpointing

    policy = make_policy(checkpoint_dtype="bfloat16")
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.save_pretrained(tmp_path / "ckpt")
    model_file = tmp_path / "ckpt" / "model.safetensors"
    saved = load_file(model_file)
    assert {v.dtype for v in saved.values() if v.is_floating_point()} == {torch.bfloat16}

    def load(**overrides):
        config = DiT4DiTConfig.from_pretrained(tmp_path / "ckpt")
        config.dtype = "bfloat16"
        for k, v in overrides.items():
            setattr(config, k, v)
        return DiT4DiTPolicy.from_pretrained(tmp_path / "ckpt", config=config)

    def file_backed(p: torch.Tensor) -> bool:  # its memory lies in a mapping of model.safetensors
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= p.data_ptr() < high:
                return fields[5:] == [str(model_file)]
        return False

    mapped, copied = load(), load(map_weights=False)
    trained = {k: v for k, v in mapped.state_dict().items() if k in saved}
    assert all(torch.equal(trained[k], saved[k]) for k in saved)  # exact: the file's bits, not recomputed
    assert all(file_backed(p) for p in mapped.action_head.parameters())
    assert not any(file_backed(p) for p in copied.action_head.parameters())
    batch, noise = inference_batch(), torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    # Exact: the same bf16 values through the same computation.
    chunk = mapped.predict_action_chunk(batch, noise=noise)
    assert torch.equal(chunk, copied.predict_action_chunk(batch, noise=noise))

    # Copy-on-write: an in-place write changes the policy's page, not the file.
    name, weight = next((k, v) for k, v in mapped.state_dict().items() if k.startswith("action_head."))
    kept = weight.clone()
    with torch.no_grad():
        weight.add_(1.0)
        assert torch.equal(load_file(model_file)[name], saved[name])
        weight.copy_(kept)

    # Saving other weights over the mapped file replaces it: the mapped policy keeps reading the old inode.
    other = make_policy(checkpoint_dtype="bfloat16")
    other.save_pretrained(tmp_path / "ckpt")
    assert not torch.equal(load_file(model_file)[next(iter(saved))], saved[next(iter(saved))])
    assert torch.equal(mapped.predict_action_chunk(batch, noise=noise), chunk)

    # A save that fails leaves the old file whole and no partial file beside it.
    before = model_file.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpointing, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        policy.save_pretrained(tmp_path / "ckpt")
    assert model_file.read_bytes() == before
    assert not list((tmp_path / "ckpt").glob("*.partial"))
    monkeypatch.undo()

    # train(): fp32 weights equal to the (replaced) file's bf16 values, up-cast.
    reloaded = load()
    reloaded.train()
    on_disk = load_file(model_file)
    state = reloaded.state_dict()
    assert all(state[k].dtype == torch.float32 and torch.equal(state[k], on_disk[k].float()) for k in on_disk)

    # The mapped load refuses a non-finite weight as the copying ones do.
    from safetensors.torch import save_file

    damaged = load_file(model_file)
    key = next(k for k in damaged if k.startswith("video.transformer.transformer_blocks.0."))
    damaged[key] = torch.full_like(damaged[key], float("inf"))
    save_file(damaged, model_file)
    with pytest.raises(ValueError, match=r"NaN/Inf in 1 tensors .*" + key.replace(".", r"\.")):
        load()

    # float32 served from float32 is mapped the same way; map_weights=false gives the policy its own copy.
    fp32 = make_policy()
    fp32.save_pretrained(tmp_path / "fp32")
    model_file = tmp_path / "fp32" / "model.safetensors"
    for map_weights, expected in ((True, True), (False, False)):
        config = DiT4DiTConfig.from_pretrained(tmp_path / "fp32")
        config.map_weights = map_weights
        loaded = DiT4DiTPolicy.from_pretrained(tmp_path / "fp32", config=config)
        assert all(file_backed(p) == expected for p in loaded.action_head.parameters()), map_weights

    with pytest.raises(ValueError, match="checkpoint_dtype='int8'"):
        make_policy(checkpoint_dtype="int8")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_finds_every_nan_and_infinity(dtype):
    """The load and save check (`checkpointing.all_finite`, one aminmax pass) finds a NaN, +Inf or -Inf at
    either end or in the middle of a tensor, contiguous or not, and passes finite, integer and empty ones."""
    from lerobot_dit4dit.checkpointing import all_finite

    assert all_finite(torch.randn(257).to(dtype))
    assert all_finite(torch.full((3,), torch.finfo(dtype).max, dtype=dtype))
    assert all_finite(torch.zeros(0, dtype=dtype)) and all_finite(torch.arange(5))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for index in (0, 128, 256):
            tensor = torch.randn(257).to(dtype)
            tensor[index] = bad
            assert not all_finite(tensor), (bad, index)
        transposed = torch.randn(16, 16).to(dtype).t()
        transposed[3, 7] = bad
        assert not all_finite(transposed), bad
