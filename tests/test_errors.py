"""What dit4dit refuses, as a catalogue: one row per bad input or fault, with the words its error must
contain, or, for inputs that are handled, the check that the result is right.

Checks live where LeRobot users meet them: `__post_init__` / `validate_features` for the config, the saved
preprocessor for observations and training batches, the policy for what only it can know, loading for
checkpoints.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import linecache
import logging
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import draccus
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature, PreTrainedConfig
from utils import ACTION_DIM, CAMERAS, IMG, STATE_DIM, inference_batch, tiny_config, train_batch

from lerobot_dit4dit import DiT4DiTConfig, DiT4DiTPolicy, make_dit4dit_pre_post_processors
from lerobot_dit4dit.flow_matching import ForwardNoise

FRONT, WRIST = CAMERAS


@dataclass
class Ctx:
    base: str
    tmp: Path

    def policy(self, **overrides) -> DiT4DiTPolicy:
        torch.manual_seed(0)
        return DiT4DiTPolicy(tiny_config(self.base, **overrides))

    def preprocess(self, obs: dict, **overrides):
        stats = {
            "observation.state": {"min": -torch.ones(STATE_DIM), "max": torch.ones(STATE_DIM)},
            "action": {"min": -torch.ones(ACTION_DIM), "max": torch.ones(ACTION_DIM)},
        }
        pre, _ = make_dit4dit_pre_post_processors(tiny_config(self.base, **overrides), dataset_stats=stats)
        return pre(obs)

    def checkpoint(self, **overrides) -> Path:
        path = self.tmp / "ckpt"
        self.policy(**overrides).save_pretrained(path)
        return path

    def full_checkpoint(self) -> Path:
        """A checkpoint as lerobot-train writes it: the policy, shipped text conditioning and both processor
        pipelines with their statistics."""
        path, policy = self.tmp / "full_ckpt", self.policy()
        policy.select_action(inference_batch())  # an instruction seen, so its conditioning ships
        policy.save_pretrained(path)
        stats = {
            "observation.state": {"min": -torch.ones(STATE_DIM), "max": torch.ones(STATE_DIM)},
            "action": {"min": -torch.ones(ACTION_DIM), "max": torch.ones(ACTION_DIM)},
        }
        for pipeline in make_dit4dit_pre_post_processors(policy.config, dataset_stats=stats):
            pipeline.save_pretrained(path)
        return path


def raw_observation(batch_size: int = 2) -> dict:
    """An env-style observation: float images in [0, 1] at a foreign size, unnormalised state."""
    g = torch.Generator().manual_seed(0)
    return {
        FRONT: torch.rand(batch_size, 3, 48, 48, generator=g),
        WRIST: torch.rand(batch_size, 3, 48, 48, generator=g),
        "observation.state": torch.rand(batch_size, STATE_DIM, generator=g) * 2 - 1,
        "task": ["move the black dot to the red disc"] * batch_size,
    }


def edit(obs: dict, key: str, fn) -> dict:
    obs = dict(obs)
    if fn is None:
        del obs[key]
    else:
        obs[key] = fn(obs[key])
    return obs


def nan_at(x: torch.Tensor, value=float("nan")) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[3] = value
    return x


def edit_config_json(path: Path, **changes) -> Path:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def flip_bytes(path: Path) -> Path:
    """Overwrite bytes in the middle of the tensor data (header intact): NaN-producing bit patterns."""
    data = bytearray((path / "model.safetensors").read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for i in range(header + 64, min(len(data), header + 64 + 4096), 4):
        data[i : i + 4] = b"\xff\xff\xff\x7f"
    (path / "model.safetensors").write_bytes(bytes(data))
    return path


def base_without(ctx: Ctx, part: str) -> str:
    copy = ctx.tmp / "base_copy"
    shutil.copytree(ctx.base, copy)
    shutil.rmtree(copy / part)
    return str(copy)


def one_camera_config(ctx: Ctx) -> DiT4DiTConfig:
    return tiny_config(
        ctx.base,
        input_features={
            FRONT: PolicyFeature(FeatureType.VISUAL, (3, IMG, IMG)),
            "observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,)),
        },
    )


def nan_loss(ctx: Ctx):
    policy = ctx.policy()
    batch = train_batch(policy.config)
    batch["action"][0, 0, 0] = float("nan")
    batch["episode_index"], batch["frame_index"] = torch.tensor([3, 5]), torch.tensor([17, 2])
    policy.train()
    policy.forward(batch)


def save_nan_weights(ctx: Ctx):
    policy = ctx.policy()
    with torch.no_grad():
        next(policy.action_head.parameters()).fill_(float("nan"))
    policy.save_pretrained(ctx.tmp / "nan")


Row = tuple[str, Callable[[Ctx], object], type[BaseException], str]

# id, action(ctx), exception, words the message must contain
CONFIG_ERRORS: list[Row] = [
    # ------------------------------------------------------------------ config values
    (
        "frames_not_1_mod_4",
        lambda c: DiT4DiTConfig(num_video_frames=4),
        ValueError,
        "num_video_frames=4 must be 1 mod 4",
    ),
    (
        "resolution_not_16",
        lambda c: DiT4DiTConfig(image_resolution=(30, 32)),
        ValueError,
        r"\(30, 32\).*divisible by 16",
    ),
    (
        "unknown_training_mode",
        lambda c: DiT4DiTConfig(training_mode="vid"),
        ValueError,
        "training_mode='vid'",
    ),
    (
        "n_action_steps_gt_chunk",
        lambda c: DiT4DiTConfig(chunk_size=8, n_action_steps=9),
        ValueError,
        "n_action_steps=9 cannot exceed chunk_size=8",
    ),
    ("duplicate_camera", lambda c: DiT4DiTConfig(camera_order=[FRONT, FRONT]), ValueError, "more than once"),
    (
        "negative_normalization_range",
        lambda c: DiT4DiTConfig(min_normalization_range=-0.1),
        ValueError,
        "min_normalization_range=-0.1",
    ),
    (
        "negative_video_loss_weight",
        lambda c: DiT4DiTConfig(video_loss_weight=-1.0),
        ValueError,
        "video_loss_weight=-1.0",
    ),
    (
        "feature_sigma_zero",
        lambda c: DiT4DiTConfig(feature_sigma=0.0),
        ValueError,
        r"feature_sigma=0.0 must be in \(0, 1\]",
    ),
    ("feature_sigma_above_one", lambda c: DiT4DiTConfig(feature_sigma=1.5), ValueError, "feature_sigma=1.5"),
    (
        "zero_timestep_buckets",
        lambda c: DiT4DiTConfig(num_timestep_buckets=0),
        ValueError,
        "num_timestep_buckets=0",
    ),
    ("zero_prompt_tokens", lambda c: DiT4DiTConfig(max_prompt_tokens=0), ValueError, "max_prompt_tokens=0"),
    (
        "dropout_one",
        lambda c: DiT4DiTConfig(action_dropout=1.0),
        ValueError,
        r"action_dropout=1.0 must be in \[0, 1\)",
    ),
    ("dropout_negative", lambda c: DiT4DiTConfig(action_dropout=-0.1), ValueError, "action_dropout=-0.1"),
    ("unknown_dtype", lambda c: DiT4DiTConfig(dtype="fp8"), ValueError, "dtype='fp8'"),
    (
        "unknown_state_encoding",
        lambda c: DiT4DiTConfig(state_encoding="sin"),
        ValueError,
        "state_encoding='sin'",
    ),
    (
        "unknown_time_distribution",
        lambda c: DiT4DiTConfig(video_time_distribution="gauss"),
        ValueError,
        "gauss",
    ),
    ("negative_extract_layer", lambda c: DiT4DiTConfig(extract_layer=-1), ValueError, "extract_layer=-1"),
    (
        "high_sigma_ratio_above_one",
        lambda c: DiT4DiTConfig(video_high_sigma_ratio=2.0),
        ValueError,
        "video_high_sigma_ratio=2.0",
    ),
    (
        "zero_inference_steps",
        lambda c: DiT4DiTConfig(num_inference_steps=0),
        ValueError,
        "num_inference_steps=0",
    ),
    ("zero_frame_stride", lambda c: DiT4DiTConfig(video_frame_stride=0), ValueError, "video_frame_stride=0"),
    (
        "negative_feature_position_embedding",
        lambda c: DiT4DiTConfig(feature_position_embedding_size=-1),
        ValueError,
        "feature_position_embedding_size=-1 must be >= 0",
    ),
    (
        "unknown_action_feature_frames",
        lambda c: DiT4DiTConfig(action_feature_frames="future"),
        ValueError,
        "action_feature_frames='future' must be 'all' or 'current'",
    ),
    (
        "state_dropout_one",
        lambda c: DiT4DiTConfig(state_dropout_prob=1.0),
        ValueError,
        r"state_dropout_prob=1.0 must be in \[0, 1\)",
    ),
    (
        "chunk_longer_than_action_sequence",
        lambda c: DiT4DiTConfig(chunk_size=16, n_action_steps=16, action_max_seq_len=16),
        ValueError,
        "chunk_size=16 exceeds action_max_seq_len=16",
    ),
    # ---------------------------------------------------------- config against features and base model
    (
        "unknown_camera_in_order",
        lambda c: c.policy(camera_order=["observation.images.top"]),
        ValueError,
        "observation.images.top",
    ),
    (
        "extract_layer_past_base",
        lambda c: c.policy(extract_layer=9),
        ValueError,
        "extract_layer=9 but the video DiT .* has 4 blocks",
    ),
    (
        "state_wider_than_max",
        lambda c: c.policy(max_state_dim=2),
        ValueError,
        "state dim 4 .* exceeds max_state_dim=2",
    ),
    (
        "gripper_dim_out_of_range",
        lambda c: c.policy(binarize_gripper_dim=7),
        ValueError,
        "binarize_gripper_dim=7",
    ),
    (
        "no_camera",
        lambda c: c.policy(
            input_features={"observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))}
        ),
        ValueError,
        r"needs at least one `observation.images.\*` camera",
    ),
    (
        "no_state",
        lambda c: c.policy(input_features={FRONT: PolicyFeature(FeatureType.VISUAL, (3, IMG, IMG))}),
        ValueError,
        "needs `observation.state` among input_features",
    ),
    ("no_action", lambda c: c.policy(output_features={}), ValueError, "needs `action` among output_features"),
    (
        "action_wider_than_max",
        lambda c: c.policy(max_action_dim=2),
        ValueError,
        "action dim 4 exceeds max_action_dim=2",
    ),
    (
        "base_model_missing",
        lambda c: c.policy(base_model=str(c.tmp / "gone")),
        FileNotFoundError,
        "base_model directory .*gone does not exist",
    ),
    (
        "base_model_without_vae",
        lambda c: c.policy(base_model=base_without(c, "vae")),
        FileNotFoundError,
        r"lacks \['vae'\]",
    ),
    (
        "base_model_without_tokenizer",
        lambda c: c.policy(base_model=base_without(c, "tokenizer")),
        FileNotFoundError,
        r"lacks \['tokenizer'\]",
    ),
]
ERRORS: list[Row] = CONFIG_ERRORS + [
    # ------------------------------------------------------------------ observations (the saved preprocessor)
    (
        "missing_camera",
        lambda c: c.preprocess(edit(raw_observation(), WRIST, None)),
        KeyError,
        "observation.images.wrist",
    ),
    (
        "missing_state",
        lambda c: c.preprocess(edit(raw_observation(), "observation.state", None)),
        KeyError,
        "no 'observation.state'",
    ),
    (
        "wrong_state_dim",
        lambda c: c.preprocess(edit(raw_observation(), "observation.state", lambda s: torch.zeros(2, 5))),
        ValueError,
        "last dim 5; the policy expects 4",
    ),
    (
        "nan_state",
        lambda c: c.preprocess(edit(raw_observation(), "observation.state", nan_at)),
        ValueError,
        r"observation.state contains NaN or Inf \(first indices \[\[0, 3\]\]\)",
    ),
    (
        "inf_state",
        lambda c: c.preprocess(
            edit(raw_observation(), "observation.state", lambda s: nan_at(s, float("inf")))
        ),
        ValueError,
        "observation.state contains NaN or Inf",
    ),
    (
        "nan_pixel",
        lambda c: c.preprocess(edit(raw_observation(), FRONT, nan_at)),
        ValueError,
        "observation.images.front contains NaN or Inf",
    ),
    (
        "inf_pixel",
        lambda c: c.preprocess(edit(raw_observation(), WRIST, lambda x: nan_at(x, -float("inf")))),
        ValueError,
        "observation.images.wrist contains NaN or Inf",
    ),
    (
        "image_0_255_float",
        lambda c: c.preprocess(edit(raw_observation(), FRONT, lambda x: x * 255)),
        ValueError,
        r"observation.images.front has values in \[.*, 25\d\]; float images must be in \[0, 1\]",
    ),
    (
        "image_minus1_1",
        lambda c: c.preprocess(edit(raw_observation(), FRONT, lambda x: x * 2 - 1)),
        ValueError,
        r"has values in \[-1",
    ),
    (
        "image_int64",
        lambda c: c.preprocess(edit(raw_observation(), FRONT, lambda x: (x * 255).long())),
        TypeError,
        "dtype torch.int64",
    ),
    (
        "image_one_channel",
        lambda c: c.preprocess(edit(raw_observation(), FRONT, lambda x: x[:, :1])),
        ValueError,
        "1 channels",
    ),
    (
        "task_none",
        lambda c: c.preprocess(edit(raw_observation(), "task", lambda t: [None, None])),
        TypeError,
        "'task' must be instruction strings; got \\[None",
    ),
    (
        "task_int",
        lambda c: c.preprocess(edit(raw_observation(), "task", lambda t: [3, 4])),
        TypeError,
        "got \\[3, 4\\]",
    ),
    ("empty_batch", lambda c: c.preprocess(raw_observation(batch_size=0)), ValueError, "empty"),
    (
        "nan_training_action",
        lambda c: c.preprocess({**raw_observation(), "action": nan_at(torch.zeros(2, 8, ACTION_DIM))}),
        ValueError,
        "action contains NaN or Inf",
    ),
    (
        "wrong_action_dim",
        lambda c: c.preprocess({**raw_observation(), "action": torch.zeros(2, 8, 3)}),
        ValueError,
        "action has shape \\(2, 8, 3\\), last dim 3; the policy expects 4",
    ),
    # ------------------------------------------------------------------ the policy
    (
        "image_size_in_batch",
        lambda c: c.policy().predict_action_chunk(
            {
                **inference_batch(),
                FRONT: inference_batch()[FRONT][..., :24, :],
                WRIST: inference_batch()[WRIST][..., :24, :],
            }
        ),
        ValueError,
        "24x64.*divisible by 16",
    ),
    (
        "frame_count_in_batch",
        lambda c: c.policy().forward(
            {
                **train_batch(tiny_config(c.base)),
                FRONT: train_batch(tiny_config(c.base))[FRONT][:, :4],
                WRIST: train_batch(tiny_config(c.base))[WRIST][:, :4],
            }
        ),
        ValueError,
        "got 4 frames per camera but num_video_frames=5",
    ),
    (
        "missing_task",
        lambda c: c.policy().predict_action_chunk(
            {k: v for k, v in inference_batch().items() if k != "task"}
        ),
        KeyError,
        "task",
    ),
    (
        "task_not_string_in_policy",
        lambda c: c.policy().predict_action_chunk({**inference_batch(), "task": [1, 2]}),
        TypeError,
        "'task' must be instruction strings",
    ),
    (
        "empty_batch_in_policy",
        lambda c: c.policy().predict_action_chunk(inference_batch(batch_size=0)),
        ValueError,
        "empty batch",
    ),
    (
        "noise_wrong_horizon",
        lambda c: c.policy().predict_action_chunk(inference_batch(), noise=torch.randn(2, 5, 8)),
        ValueError,
        r"noise has shape \(2, 5, 8\); expected .* \(2, 8, 8\)",
    ),
    (
        "forward_noise_wrong_shape",
        lambda c: c.policy().forward(
            train_batch(tiny_config(c.base)), noise=ForwardNoise(action=torch.randn(3, 8, 8))
        ),
        ValueError,
        r"action \(3, 8, 8\) \(expected \(8, 8, 8\)\)",
    ),
    (
        "video_mode_asked_for_actions",
        lambda c: c.policy(training_mode="video").predict_action_chunk(inference_batch()),
        RuntimeError,
        "training_mode='video'",
    ),
    (
        "instruction_cut_off",
        lambda c: c.policy(max_prompt_tokens=64).predict_action_chunk(inference_batch()),
        ValueError,
        "max_prompt_tokens=64 cuts the instruction 'move the black dot to the red disc' off entirely",
    ),
    (
        "nan_loss_stops_training",
        nan_loss,
        FloatingPointError,
        r"action_loss is nan at training forward 1 .*'episode_index': \[3, 5\], 'frame_index': \[17, 2\]",
    ),
    ("nan_weights_never_saved", save_nan_weights, ValueError, "refusing to save .*NaN/Inf .*action_head"),
    # ------------------------------------------------------------------ checkpoints
    (
        "action_dim_mismatch",
        lambda c: DiT4DiTPolicy.from_pretrained(
            c.checkpoint(),
            config=tiny_config(c.base, output_features={"action": PolicyFeature(FeatureType.ACTION, (3,))}),
        ),
        ValueError,
        r"another embodiment \(action dim 4 -> 3 .*--policy.reinit_embodiment_layers=true",
    ),
    (
        "weight_shape_mismatch",
        lambda c: DiT4DiTPolicy.from_pretrained(
            c.checkpoint(), config=tiny_config(c.base, action_hidden_size=32)
        ),
        ValueError,
        r"action_head\.action_decoder\.layer1\.weight: checkpoint \(64, 64\)",
    ),
    (
        "two_cameras_loaded_with_one",
        lambda c: DiT4DiTPolicy.from_pretrained(c.checkpoint(), config=one_camera_config(c)),
        ValueError,
        r"trained on cameras \['observation.images.front', 'observation.images.wrist'\]",
    ),
    (
        "flipped_bytes",
        lambda c: DiT4DiTPolicy.from_pretrained(flip_bytes(c.checkpoint())),
        ValueError,
        "holds NaN/Inf in",
    ),
    (
        "truncated_safetensors",
        lambda c: DiT4DiTPolicy.from_pretrained(truncate(c.checkpoint())),
        ValueError,
        "cannot read .*model.safetensors",
    ),
    (
        "damaged_processor_statistics",
        lambda c: DiT4DiTPolicy.from_pretrained(
            truncate(c.full_checkpoint(), "policy_preprocessor_step_*_normalizer_processor.safetensors")
        ),
        ValueError,
        "cannot read .*policy_preprocessor_step_.*_normalizer_processor.safetensors",
    ),
    (
        "damaged_processor_json",
        lambda c: DiT4DiTPolicy.from_pretrained(truncate(c.full_checkpoint(), "policy_postprocessor.json")),
        ValueError,
        "cannot parse .*policy_postprocessor.json",
    ),
    (
        "processor_statistics_of_other_features",
        lambda c: DiT4DiTPolicy.from_pretrained(stats_of_another_robot(c.full_checkpoint())),
        ValueError,
        r"normalizer_processor.safetensors was made for other weights: action.max has shape \(8,\), but "
        r".*model.safetensors was trained for a 4-D action",
    ),
    (
        "damaged_text_conditioning",
        lambda c: DiT4DiTPolicy.from_pretrained(
            truncate(c.full_checkpoint(), "text_conditioning.safetensors")
        ),
        ValueError,
        "cannot read .*text_conditioning.safetensors",
    ),
    (
        "corrupted_config_json",
        lambda c: DiT4DiTPolicy.from_pretrained(corrupt_config(c.checkpoint())),
        ValueError,
        "cannot parse .*config.json",
    ),
    (
        "checkpoint_path_missing",
        lambda c: DiT4DiTPolicy.from_pretrained(str(c.tmp / "no" / "such" / "ckpt")),
        FileNotFoundError,
        "checkpoint directory .*ckpt does not exist",
    ),
    (
        "other_policy_type",
        lambda c: DiT4DiTPolicy.from_pretrained(edit_config_json(c.checkpoint(), type="act")),
        ValueError,
        "'act' checkpoint, not dit4dit",
    ),
    (
        "unknown_config_field",
        lambda c: PreTrainedConfig.from_pretrained(edit_config_json(c.checkpoint(), extract_layr=3)),
        draccus.utils.ParsingError,
        "extract_layr",
    ),
    (
        "recorded_base_model_gone",
        lambda c: DiT4DiTPolicy.from_pretrained(
            edit_config_json(c.checkpoint(), base_model=str(c.tmp / "moved"))
        ),
        FileNotFoundError,
        "--policy.base_model=",
    ),
]


def truncate(path: Path, name: str = "model.safetensors") -> Path:
    file = next(path.glob(name))
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])
    return path


def stats_of_another_robot(path: Path) -> Path:
    """Replace the normaliser's statistics with an action twice as wide as config.json's."""
    from safetensors.torch import load_file, save_file

    file = next(path.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    stats = load_file(file)
    stats = {k: torch.cat([v, v]) if k.startswith("action.") else v for k, v in stats.items()}
    save_file(stats, file)
    return path


def corrupt_config(path: Path) -> Path:
    (path / "config.json").write_text('{"type": "dit4dit", ')
    return path


# Rows refused by a library that dit4dit hands the input to, not by dit4dit's own code: row id -> package.
RAISED_BY_LIBRARY = {"unknown_config_field": "draccus"}  # LeRobot's config parser refuses an unknown key


def _package_dir(name: str) -> Path:
    return Path(importlib.import_module(name).__file__).resolve().parent


@pytest.mark.parametrize(("row_id", "action", "error", "words"), ERRORS, ids=[row[0] for row in ERRORS])
def test_refused(tiny_base, tmp_path, row_id, action, error, words):
    with pytest.raises(error, match=words) as refused:
        action(Ctx(tiny_base, tmp_path))
    # Raised by dit4dit's check itself, not by a failure deeper down whose message happens to hold the words.
    raised_in = Path(refused.traceback[-1].path).resolve()
    package = RAISED_BY_LIBRARY.get(row_id, "lerobot_dit4dit")
    assert _package_dir(package) in raised_in.parents, f"raised in {raised_in}, not by {package}"


# ------------------------------------------------------------------ inputs that are handled, and how
def uint8_equals_float(ctx: Ctx):
    obs = raw_observation()
    as_uint8 = {
        **obs,
        FRONT: (obs[FRONT] * 255).round().to(torch.uint8),
        WRIST: (obs[WRIST] * 255).round().to(torch.uint8),
    }
    as_float = {**obs, FRONT: as_uint8[FRONT].float() / 255, WRIST: as_uint8[WRIST].float() / 255}
    a, b = ctx.preprocess(as_uint8), ctx.preprocess(as_float)
    # Exact: the preprocessor scales uint8 by the same `.float() / 255` as `as_float` (an IEEE division: the
    # same values), and from there both inputs take the same computation.
    assert torch.equal(a[FRONT], b[FRONT]) and torch.equal(a[WRIST], b[WRIST])
    policy = ctx.policy()
    noise = torch.randn(2, 8, 8)
    assert torch.equal(
        policy.predict_action_chunk(a, noise=noise), policy.predict_action_chunk(b, noise=noise)
    )


def image_edges_accepted(ctx: Ctx):
    obs = raw_observation()
    obs[FRONT][0, 0, 0, 0], obs[FRONT][0, 0, 0, 1] = 0.0, 1.0
    out = ctx.preprocess(obs)
    assert out[FRONT].min() >= -1 and out[FRONT].max() <= 1


def instructions_reach_the_model(ctx: Ctx):
    policy = ctx.policy()
    red, blue = policy.video.encode_prompts(["push the red block", "push the blue block"])
    assert (red - blue).abs().max() > 1e-3


def partly_cut_instruction_warns(ctx: Ctx, caplog):
    policy = ctx.policy(max_prompt_tokens=100)  # the chat template alone is 91 tokens
    with caplog.at_level(logging.WARNING, logger="lerobot_dit4dit.text_conditioning"):
        policy.video.encode_prompts(["move the black dot to the red disc"])
    assert "keeps 9 of the 34 tokens of the instruction 'move the black dot to the red disc'" in caplog.text


def batch_size_change_starts_a_new_chunk(ctx: Ctx, caplog):
    policy = ctx.policy(n_action_steps=4)
    policy.reset()
    assert policy.select_action(inference_batch(batch_size=2)).shape == (2, ACTION_DIM)
    with caplog.at_level(logging.WARNING):
        assert policy.select_action(inference_batch(batch_size=1)).shape == (1, ACTION_DIM)
    assert "batch size changed from 2 to 1" in caplog.text


def padded_future_frames_leave_the_video_loss(ctx: Ctx):
    policy = ctx.policy(training_mode="video")
    policy.eval()
    batch = train_batch(policy.config)
    noise = policy.draw_noise(2, generator=torch.Generator().manual_seed(0))
    clean, _ = policy.forward(batch, noise=noise)
    padded = {
        **batch,
        **{
            f"{cam}_is_pad": torch.tensor([[False] * 5, [False, False, False, True, True]]) for cam in CAMERAS
        },
    }
    garbage = {**padded, **{cam: padded[cam].clone() for cam in CAMERAS}}
    for cam in CAMERAS:
        garbage[cam][
            1, 1:
        ] = -1.0  # sample 1's only future latent frame is padded: what it holds must not matter
    masked, _ = policy.forward(padded, noise=noise)
    masked_garbage, _ = policy.forward(garbage, noise=noise)
    torch.testing.assert_close(masked, masked_garbage)
    assert not torch.allclose(masked, clean)


HANDLED = [
    ("uint8_images_scaled", uint8_equals_float),
    ("images_at_0_and_1", image_edges_accepted),
    ("two_instructions_two_embeddings", instructions_reach_the_model),
    ("instruction_cut_in_part_warns", partly_cut_instruction_warns),
    ("batch_size_change_mid_chunk", batch_size_change_starts_a_new_chunk),
    ("padded_future_frames_masked", padded_future_frames_leave_the_video_loss),
]


@pytest.mark.parametrize("check", [row[1] for row in HANDLED], ids=[row[0] for row in HANDLED])
def test_handled(tiny_base, tmp_path, caplog, check):
    import inspect

    ctx = Ctx(tiny_base, tmp_path)
    check(ctx, caplog) if "caplog" in inspect.signature(check).parameters else check(ctx)


def _raise_sites(cls: type) -> dict[tuple[str, int], str]:
    """(file, line) -> source line of every `raise <exception>` in the methods defined by `cls` (bare
    re-raises left out)."""
    sites = {}
    for function in vars(cls).values():
        if not inspect.isfunction(function) or function.__code__.co_filename != inspect.getfile(cls):
            continue  # not a method written in the class (dataclass' generated __init__, __eq__, ...)
        lines, first = inspect.getsourcelines(function)
        path = inspect.getsourcefile(function)
        for node in ast.walk(ast.parse(textwrap.dedent("".join(lines)))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                line = first + node.lineno - 1
                sites[(path, line)] = linecache.getline(path, line).strip()
    return sites


def test_catalogue_covers_every_config_check(tiny_base, tmp_path):
    """Every check of `DiT4DiTConfig` (`__post_init__`'s validation, `validate_features`) is the raise site of
    some catalogue row: a new check without a row, or a row that no longer reaches its check, fails."""
    sites = _raise_sites(DiT4DiTConfig)
    assert sites, "no raise statements found in DiT4DiTConfig"
    reached = set()
    for row_id, action, error, _ in CONFIG_ERRORS:
        (tmp_path / row_id).mkdir()
        with pytest.raises(error) as refused:
            action(Ctx(tiny_base, tmp_path / row_id))
        tb = refused.value.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        reached.add((inspect.getsourcefile(tb.tb_frame), tb.tb_lineno))
    missing = [
        f"{Path(path).name}:{line}: {text}"
        for (path, line), text in sites.items()
        if (path, line) not in reached
    ]
    assert not missing, "config checks without a catalogue row:\n" + "\n".join(missing)
