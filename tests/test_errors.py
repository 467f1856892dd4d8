"""Bad inputs fail loudly, naming the key, shape or value."""

from __future__ import annotations

import json

import draccus
import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature, PreTrainedConfig
from utils import IMG, inference_batch, tiny_config, train_batch

from lerobot_dit4dit import DiT4DiTConfig, DiT4DiTPolicy, make_dit4dit_pre_post_processors


def _raw_observation(batch_size=2):
    """An env-style observation: images in [0, 1] at a foreign size, unnormalised state."""
    obs = {
        "observation.images.front": torch.rand(batch_size, 3, 48, 48),
        "observation.images.wrist": torch.rand(batch_size, 3, 48, 48),
        "observation.state": torch.randn(batch_size, 4),
        "task": ["move the black dot to the red disc"] * batch_size,
    }
    return obs


def _stats():
    return {
        "observation.state": {"min": -torch.ones(4), "max": torch.ones(4)},
        "action": {"min": -torch.ones(4), "max": torch.ones(4)},
    }


def test_preprocessor_resizes_and_scales(tiny_base):
    pre, _ = make_dit4dit_pre_post_processors(tiny_config(tiny_base), dataset_stats=_stats())
    names = [s.__class__.__name__ for s in pre.steps]
    assert names[-1] == "DiT4DiTObservationProcessorStep"
    out = pre(_raw_observation())
    img = out["observation.images.front"]
    assert img.shape == (2, 3, IMG, IMG)
    assert img.min() >= -1 and img.max() <= 1 and img.min() < -0.5


def test_missing_camera(tiny_base):
    pre, _ = make_dit4dit_pre_post_processors(tiny_config(tiny_base), dataset_stats=_stats())
    obs = _raw_observation()
    del obs["observation.images.wrist"]
    with pytest.raises(KeyError, match="observation.images.wrist"):
        pre(obs)


def test_nan_state(tiny_base):
    pre, _ = make_dit4dit_pre_post_processors(tiny_config(tiny_base), dataset_stats=_stats())
    obs = _raw_observation()
    obs["observation.state"][1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"observation.state contains NaN.*\[1, 2\]"):
        pre(obs)


def test_bad_image_size_in_config():
    with pytest.raises(ValueError, match=r"image_resolution=\(30, 32\).*divisible by 16"):
        DiT4DiTConfig(image_resolution=(30, 32), device="cpu")


def test_bad_image_size_in_batch(make_policy):
    policy = make_policy()
    batch = inference_batch()
    for cam in ("observation.images.front", "observation.images.wrist"):
        batch[cam] = batch[cam][..., :24, :]
    with pytest.raises(ValueError, match="24x64.*divisible by 16"):
        policy.predict_action_chunk(batch)


def test_bad_frame_count_in_config():
    with pytest.raises(ValueError, match="num_video_frames=4 must be 1 mod 4"):
        DiT4DiTConfig(num_video_frames=4, device="cpu")


def test_bad_frame_count_in_batch(make_policy):
    policy = make_policy()
    batch = train_batch(policy.config)
    for cam in ("observation.images.front", "observation.images.wrist"):
        batch[cam] = batch[cam][:, :4]
    with pytest.raises(ValueError, match="got 4 frames per camera but num_video_frames=5"):
        policy.forward(batch)


def test_unknown_camera_in_camera_order(tiny_base):
    with pytest.raises(ValueError, match="observation.images.top"):
        DiT4DiTPolicy(tiny_config(tiny_base, camera_order=["observation.images.top"]))


def test_extract_layer_out_of_range(tiny_base):
    with pytest.raises(ValueError, match="extract_layer=9 but the video DiT .* has 4 blocks"):
        DiT4DiTPolicy(tiny_config(tiny_base, extract_layer=9))


def test_unknown_config_field(make_policy, tmp_path):
    make_policy().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["extract_layr"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(draccus.utils.ParsingError, match="extract_layr"):
        PreTrainedConfig.from_pretrained(tmp_path)


def test_action_dim_mismatch_on_load(make_policy, tiny_base, tmp_path):
    make_policy().save_pretrained(tmp_path)
    other = tiny_config(tiny_base, output_features={"action": PolicyFeature(FeatureType.ACTION, (3,))})
    with pytest.raises(ValueError, match="action dim 4.*has action dim 3"):
        DiT4DiTPolicy.from_pretrained(tmp_path, config=other)


def test_shape_mismatch_on_load_names_the_key(make_policy, tiny_base, tmp_path):
    make_policy().save_pretrained(tmp_path)
    other = tiny_config(tiny_base, action_hidden_size=32)
    with pytest.raises(
        ValueError, match=r"action_head\.action_decoder\.layer1\.weight: checkpoint \(64, 64\)"
    ):
        DiT4DiTPolicy.from_pretrained(tmp_path, config=other)


def test_unexpected_key_on_load(make_policy, tmp_path):
    from safetensors.torch import load_file, save_file

    make_policy().save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    sd["action_head.extra.weight"] = torch.zeros(1)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys \['action_head.extra.weight'\]"):
        DiT4DiTPolicy.from_pretrained(tmp_path)


def test_missing_task(make_policy):
    policy = make_policy()
    batch = inference_batch()
    del batch["task"]
    with pytest.raises(KeyError, match="task"):
        policy.predict_action_chunk(batch)
