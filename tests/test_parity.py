"""Parity with the official DiT4DiT (Mondo-Robotics/DiT4DiT@0362b34) on its recorded golden fixtures.

The fixture directory comes from $DIT4DIT_PARITY_FIXTURES (default: tests/fixtures/parity), so the same test
runs unchanged on any fixture set of the same format. The official checkpoint is converted with our converter,
loaded with `from_pretrained`, and fed the recorded inputs and random draws.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lerobot_dit4dit import DiT4DiTPolicy
from lerobot_dit4dit.convert_official import OFFICIAL_DEFAULTS, convert_official
from lerobot_dit4dit.flow_matching import ForwardNoise
from lerobot_dit4dit.inputs import tile_cameras
from lerobot_dit4dit.recipes import recipe_for_data_mix

FIXTURES = Path(os.environ.get("DIT4DIT_PARITY_FIXTURES", Path(__file__).parent / "fixtures" / "parity"))
CAMERA = "observation.images.image_0"


def official_expectations() -> dict:
    """What the converted config must say, read from the fixture set's own official config.yaml."""
    official = yaml.safe_load((FIXTURES / "official_config.yaml").read_text())
    cosmos, am = official["framework"]["cosmos25"], official["framework"]["action_model"]
    data = official.get("datasets", {}).get("vla_data", {})
    delta = data.get("video_delta_indices", OFFICIAL_DEFAULTS["video_delta_indices"])
    stride = int(data.get("action_video_freq_ratio", 1))
    recipe = recipe_for_data_mix(str(data.get("data_mix", "")))
    return {
        "extract_layer": int(cosmos.get("extract_layer", OFFICIAL_DEFAULTS["extract_layer"])),
        "num_video_frames": len(range(0, len(delta), stride)),
        "video_frame_stride": stride,
        "chunk_size": int(am.get("action_horizon", int(am.get("future_action_window_size", 7)) + 1)),
        "num_action_noise_draws": int(
            official.get("trainer", {}).get(
                "repeated_diffusion_steps", OFFICIAL_DEFAULTS["repeated_diffusion_steps"]
            )
        ),
        "conditional_frame_timestep": float(
            cosmos.get("conditional_frame_timestep", OFFICIAL_DEFAULTS["conditional_frame_timestep"])
        ),
        "gripper_dim": recipe.binarize_gripper_dim if recipe else None,
    }


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    info = json.loads((FIXTURES / "inputs.json").read_text())
    out = convert_official(
        str(FIXTURES / "official_model.safetensors"),
        FIXTURES / "official_config.yaml",
        tmp_path_factory.mktemp("converted") / "policy",
        cameras=[CAMERA],
        state_dim=info["state_valid_dims"],
        action_dim=info["action_valid_dims"],
        state_encoding="none",
    )
    policy = DiT4DiTPolicy.from_pretrained(out)  # eval mode: dropout off, as the fixtures were made
    inputs = load_file(FIXTURES / "inputs.safetensors")
    noise = load_file(FIXTURES / "noise.safetensors")
    expected = load_file(FIXTURES / "outputs.safetensors")
    a = info["action_valid_dims"]
    frames = inputs["frames"] * 2 - 1  # what our preprocessor does to [0, 1] frames
    batch = {
        CAMERA: frames,
        "observation.state": inputs["state"][:, :, : info["state_valid_dims"]],
        "action": inputs["actions"][..., :a],
        "action_is_pad": ~inputs["action_mask"][..., 0],
        "task": info["instructions"],
    }
    return policy, batch, noise, expected, info


def _report(name: str, got: torch.Tensor, want: torch.Tensor, tol: float, relative: bool = False) -> float:
    diff = (got.float() - want.float()).abs().max().item()
    value = diff / max(want.abs().max().item(), 1e-12) if relative else diff
    print(f"parity {name}: max {'rel ' if relative else ''}diff {value:.3e} (tolerance {tol:.0e})")
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert value <= tol, f"{name}: {value:.3e} > {tol:.0e}"
    return value


def test_prompt_embeddings(parity):
    policy, batch, _, expected, _ = parity
    got = policy.video.encode_prompts(batch["task"])
    _report("text.prompt_embeds", got, expected["text.prompt_embeds"], 1e-5)


def test_condition_latents(parity):
    policy, batch, _, expected, _ = parity
    video = tile_cameras(batch, policy.config, train=True)
    cond = policy.video.encode_video(video[:, :, :1])
    _report(
        "train.feature.cond_latents[frame 0]", cond, expected["train.feature.cond_latents"][:, :, :1], 1e-5
    )
    x0 = policy.video.encode_video(video)
    _report("train.video_fm.x0_latents", x0, expected["train.video_fm.x0_latents"], 1e-5)


@pytest.mark.parametrize("phase", ["train", "predict"])
def test_block_features(parity, phase):
    policy, batch, noise, expected, _ = parity
    video = tile_cameras(batch, policy.config, train=True)
    cond = policy.video.encode_video(video[:, :, :1])
    prompts = policy.video.encode_prompts(batch["task"])
    with torch.no_grad():
        got = policy.extract_features(cond, prompts, noise=noise[f"{phase}.feature.init_latents"])
    _report(f"{phase}.feature.block_features", got, expected[f"{phase}.feature.block_features"], 1e-5)


def test_losses(parity):
    policy, batch, noise, expected, _ = parity
    draws = ForwardNoise(
        feature=noise["train.feature.init_latents"],
        video_time=noise["train.video_fm.t_uniform"],
        video=noise["train.video_fm.z"],
        action=noise["train.action_fm.eps"],
        action_beta=noise["train.action_fm.beta_sample"],
    )
    policy.eval()
    with torch.no_grad():
        _, info = policy.forward(batch, noise=draws)
    _report(
        "train.video_fm.loss",
        torch.tensor(info["video_loss"]),
        expected["train.video_fm.loss"],
        1e-5,
        relative=True,
    )
    _report(
        "train.action_fm.loss",
        torch.tensor(info["action_loss"]),
        expected["train.action_fm.loss"],
        1e-5,
        relative=True,
    )


def test_predicted_action_chunk(parity):
    policy, batch, noise, expected, info = parity
    obs = {
        CAMERA: batch[CAMERA][:, 0],
        "observation.state": batch["observation.state"][:, 0],
        "task": batch["task"],
    }
    got = policy.predict_action_chunk(
        obs, noise=noise["predict.action.init_noise"], feature_noise=noise["predict.feature.init_latents"]
    )
    _report(
        "predict.action.actions",
        got,
        expected["predict.action.actions"][..., : info["action_valid_dims"]],
        1e-4,
    )


def test_converter_accepts_the_official_pt_format(tmp_path):
    out = convert_official(
        str(FIXTURES / "official_model.pt"),
        FIXTURES / "official_config.yaml",
        tmp_path / "p",
        cameras=[CAMERA],
        state_dim=8,
        action_dim=7,
        state_encoding="none",
    )
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["converted_keys"] > 0 and summary["frozen_keys_verified_against_base"] > 0
    cfg = json.loads((out / "config.json").read_text())
    expected = official_expectations()
    for key in (
        "extract_layer",
        "num_video_frames",
        "video_frame_stride",
        "chunk_size",
        "num_action_noise_draws",
        "conditional_frame_timestep",
    ):
        assert cfg[key] == expected[key], (key, cfg[key], expected[key])
    assert cfg["n_action_steps"] == cfg["chunk_size"]  # the official clients execute the whole chunk


@pytest.mark.parametrize(
    "edit,error",
    [
        ("extra_key", r"backbone_interface\.extractor\.lora\.weight"),
        ("wrong_shape", r"action_head\.state_encoder\.layer1\.weight: checkpoint \(3, 3\)"),
        ("changed_vae", "differs from"),
    ],
)
def test_converter_rejects_unknown_and_mismatched_keys(tmp_path, edit, error):
    from safetensors.torch import save_file

    sd = load_file(FIXTURES / "official_model.safetensors")
    if edit == "extra_key":
        sd["backbone_interface.extractor.lora.weight"] = torch.zeros(1)
    elif edit == "wrong_shape":
        sd["action_model.state_encoder.layer1.weight"] = torch.zeros(3, 3)
    else:
        key = next(k for k in sd if k.startswith("backbone_interface.extractor.vae."))
        sd[key] = sd[key] + 1
    save_file(sd, tmp_path / "edited.safetensors")
    with pytest.raises(ValueError, match=error):
        convert_official(
            str(tmp_path / "edited.safetensors"),
            FIXTURES / "official_config.yaml",
            tmp_path / "out",
            cameras=[CAMERA],
            state_dim=8,
            action_dim=7,
            state_encoding="none",
        )


def test_converter_processors_reproduce_official_normalisation(tmp_path):
    """dataset_statistics.json -> min/max on masked dims, raw gripper, clip, and the recipe's gripper
    binarisation (LIBERO: 6; none for recipes without one)."""
    import shutil

    from lerobot.policies.factory import make_pre_post_processors

    shutil.copy(FIXTURES / "official_config.yaml", tmp_path / "config.yaml")
    lo, hi = [-1.0, -2.0, -3.0, -0.5, -0.5, -0.5, 0.0], [1.0, 2.0, 3.0, 0.5, 0.5, 0.5, 1.0]
    stats = {
        "franka": {
            "action": {"min": lo, "max": hi, "mask": [True] * 6 + [False]},
            "state": {"min": [0.0] * 8, "max": [1.0] * 8},
        }
    }
    (tmp_path / "dataset_statistics.json").write_text(json.dumps(stats))
    out = convert_official(
        str(FIXTURES / "official_model.safetensors"),
        tmp_path / "config.yaml",
        tmp_path / "p",
        base_model=str(FIXTURES / "base_pipeline"),
        cameras=[CAMERA],
        state_dim=8,
        action_dim=7,
        state_encoding="sincos_interleaved",
    )
    policy = DiT4DiTPolicy.from_pretrained(out)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(out))
    normalised = torch.tensor([[0.5, -0.5, 2.0, 0.0, 1.0, -1.0, 0.7]])
    got = post(normalised)
    # dims 0-5: clip to [-1, 1] then 0.5 (a + 1)(max - min) + min; dim 6 (masked): raw, clipped to 0.7, and
    # with LIBERO's binarisation 0.7 >= 0.5 -> open (-1)
    gripper_dim = official_expectations()["gripper_dim"]
    expected = torch.tensor([[0.5, -1.0, 3.0, 0.0, 0.5, -0.5, 0.7]])
    if gripper_dim is not None:
        expected[0, gripper_dim] = -1.0 if normalised[0, gripper_dim] >= 0.5 else 1.0
    torch.testing.assert_close(got, expected)

    obs = {CAMERA: torch.rand(1, 3, 64, 64), "observation.state": torch.arange(8.0)[None], "task": ["x"]}
    state = pre(obs)["observation.state"]
    x = torch.arange(8.0)
    torch.testing.assert_close(
        state[0], torch.stack([x.sin(), x.cos()], -1).flatten()
    )  # raw, sin/cos interleaved
    assert policy.predict_action_chunk(pre(obs)).shape == (1, policy.config.chunk_size, 7)


def test_converter_writes_the_served_dtype(tmp_path):
    """`checkpoint_dtype=bfloat16`: the converted model.safetensors holds the fp32 conversion's weights cast
    to bf16 (a checkpoint a bf16 policy maps); an unknown dtype is refused by name before anything is read."""
    kwargs = {"cameras": [CAMERA], "state_dim": 8, "action_dim": 7, "state_encoding": "none"}
    source, config = str(FIXTURES / "official_model.pt"), FIXTURES / "official_config.yaml"
    full = load_file(convert_official(source, config, tmp_path / "fp32", **kwargs) / "model.safetensors")
    half = load_file(
        convert_official(source, config, tmp_path / "bf16", checkpoint_dtype="bfloat16", **kwargs)
        / "model.safetensors"
    )
    assert half.keys() == full.keys()
    assert {v.dtype for v in full.values()} == {torch.float32}
    assert all(torch.equal(half[k], full[k].to(torch.bfloat16)) for k in full)
    with pytest.raises(ValueError, match="checkpoint_dtype='int4'"):
        convert_official(source, config, tmp_path / "bad", checkpoint_dtype="int4", **kwargs)
    assert not (tmp_path / "bad").exists()
