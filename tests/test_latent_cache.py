"""The optional VAE-latent cache: built by `dit4dit-latent-cache` with lerobot-train's own
flags, read by training instead of the VAE, with the same losses."""

from __future__ import annotations

import copy
import sys

import draccus
import pytest
import torch
from lerobot.configs.train import TrainPipelineConfig
from lerobot.datasets.factory import make_dataset
from lerobot.policies.factory import make_policy, make_pre_post_processors
from utils import dataset_flags, run, tiny_policy_flags

from lerobot_dit4dit.latent_cache import LatentCache

CAMERA = "observation.images.front"


def test_latent_cache_gives_the_losses_of_the_vae(tiny_base, reach_dataset, tmp_path):
    flags = [*tiny_policy_flags(tiny_base), *dataset_flags(reach_dataset)]
    cache = tmp_path / "latents.safetensors"
    out = run(
        [sys.executable, "-m", "lerobot_dit4dit.scripts.latent_cache", f"--output={cache}", *flags]
    ).stdout
    assert "wrote" in out and cache.exists() and not cache.with_name(cache.name + ".partial").exists()

    cfg = draccus.parse(TrainPipelineConfig, args=flags)
    cfg.validate()
    dataset = make_dataset(cfg)
    policy = make_policy(cfg.policy, ds_meta=dataset.meta)
    preprocessor, _ = make_pre_post_processors(cfg.policy, dataset_stats=dataset.meta.stats)
    # Two clips from an episode's start and two that run past its end (their last frames are padding).
    ends = dataset.meta.episodes["dataset_to_index"]
    picks = [0, 5, int(ends[0]) - 1, int(ends[1]) - 3]
    batch = preprocessor(torch.utils.data.default_collate([dataset[i] for i in picks]))
    assert policy.future_latent_mask(batch, 2)[2:].logical_not().all()  # the padded clips are masked
    noise = policy.draw_noise(4, torch.Generator().manual_seed(0))
    policy.eval()
    with torch.no_grad():
        loss, info = policy.forward(batch, noise=noise)

    # On the cache the dataset loads only the current frame and no padding flags: the cache supplies both.
    cfg.policy.latent_cache = str(cache)
    assert cfg.policy.observation_delta_indices is None
    single = make_dataset(cfg)
    item = single[picks[2]]
    assert item[CAMERA].ndim == 3 and f"{CAMERA}_is_pad" not in item
    single_batch = preprocessor(torch.utils.data.default_collate([single[i] for i in picks]))
    vae_calls = []
    encode = policy.video.encode_video
    policy.video.encode_video = lambda video: vae_calls.append(1) or encode(video)
    with torch.no_grad():
        cached_loss, cached_info = policy.forward(single_batch, noise=noise)
    assert not vae_calls, "the VAE ran although the latents are cached"
    assert torch.allclose(cached_loss, loss, rtol=1e-5, atol=1e-6), (loss, cached_loss)
    for key in info:
        assert abs(cached_info[key] - info[key]) <= 1e-5 * max(1.0, abs(info[key])), (key, info, cached_info)
    cfg.policy.latent_cache = None

    # A policy with other settings refuses the cache, naming the difference; unknown indices are refused.
    other = copy.copy(cfg.policy)
    other.num_video_frames = 1
    with pytest.raises(ValueError, match="num_video_frames"):
        LatentCache(cache, other)
    with pytest.raises(KeyError, match="not in latent_cache"):
        LatentCache(cache, cfg.policy).lookup(torch.tensor([10_000]))

    # Training on another dataset with a checkpoint's stale cache path is refused, naming what differs, even
    # when every sampled index is in the cache.
    cfg.policy.latent_cache = str(cache)
    policy = make_policy(cfg.policy, ds_meta=dataset.meta)
    with torch.no_grad():
        policy.forward(single_batch, noise=noise)  # its own dataset: accepted
    renamed = copy.copy(dataset.meta)
    renamed.repo_id = "someone/other_dataset"
    stale = make_policy(cfg.policy, ds_meta=renamed)
    with pytest.raises(ValueError, match="built for another dataset.*someone/other_dataset"), torch.no_grad():
        stale.forward(single_batch, noise=noise)
