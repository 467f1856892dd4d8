"""The flow-matching samplers and helpers shared by the video and action losses."""

from __future__ import annotations

import pytest
import torch

from lerobot_dit4dit.flow_matching import (
    interpolate,
    masked_mse,
    sample_beta_time,
    sample_video_time,
    time_to_bucket,
    velocity_target,
)


def test_path_endpoints_and_target():
    x0, z = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    torch.testing.assert_close(interpolate(x0, z, torch.zeros(3)), x0)
    torch.testing.assert_close(interpolate(x0, z, torch.ones(3)), z)
    t = torch.tensor([0.1, 0.5, 0.9])
    # d x_t / d t = z - x0, the regression target
    eps = 1e-3
    deriv = (interpolate(x0, z, t + eps) - interpolate(x0, z, t)) / eps
    torch.testing.assert_close(deriv, velocity_target(x0, z), atol=1e-3, rtol=1e-3)


def test_video_time_distributions():
    torch.manual_seed(0)
    uniform = sample_video_time(20000, torch.device("cpu"))
    assert uniform.min() >= 0 and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.01
    logit = sample_video_time(20000, torch.device("cpu"), distribution="logit_normal", logit_normal_mean=1.0)
    assert (
        logit.min() > 0
        and logit.max() < 1
        and logit.median().item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.02)
    )
    high = sample_video_time(20000, torch.device("cpu"), high_sigma_ratio=0.25, high_sigma_min=0.98)
    assert abs((high >= 0.98).float().mean().item() - (0.25 + 0.75 * 0.02)) < 0.015
    with pytest.raises(ValueError, match="cosine"):
        sample_video_time(4, torch.device("cpu"), distribution="cosine")


def test_beta_action_time():
    torch.manual_seed(0)
    t = sample_beta_time(50000, torch.device("cpu"), alpha=1.5, beta=1.0, s=0.999)
    assert t.min() >= 0 and t.max() <= 1 / 0.999
    assert t.mean().item() == pytest.approx(0.6 / 0.999, abs=0.01)  # Beta(1.5, 1) has mean 0.6
    assert time_to_bucket(torch.tensor([0.0, 0.2505, 0.999, 1.0]), 1000).tolist() == [0, 250, 999, 1000]


def test_masked_mse():
    pred, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    target[..., 3] = 100.0  # a padded dim with a huge error
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[..., 3] = False
    assert masked_mse(pred, target, mask).item() == 1.0
