"""Flow-matching pieces shared by the video loss and the action loss.

Both losses use the same path and the same time direction (LeRobot's convention, also the official one):
t = 0 is data, t = 1 is noise,

    x_t = (1 - t) * x0 + t * noise,        velocity target v = noise - x0,

and sampling integrates dx/dt = v from t = 1 down to t = 0 with Euler steps x <- x - dt * v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from lerobot.policies.common.flow_matching import sample_beta
from torch import Tensor


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t noise. `t` is (B,) and broadcasts over the trailing dims of `x0`."""
    t = t.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The flow-matching regression target for the path of `interpolate`: noise - x0."""
    return noise - x0


def sample_uniform_time(batch_size: int, device: torch.device) -> Tensor:
    """t ~ U[0, 1), shape (B,)."""
    return torch.rand(batch_size, device=device)


def sample_logit_normal_time(batch_size: int, device: torch.device, mean: float, std: float) -> Tensor:
    """t = sigmoid(N(mean, std)), shape (B,)."""
    return torch.sigmoid(torch.randn(batch_size, device=device) * std + mean)


def sample_video_time(
    batch_size: int,
    device: torch.device,
    distribution: str = "uniform",
    logit_normal_mean: float = 0.0,
    logit_normal_std: float = 1.0,
    high_sigma_ratio: float = 0.0,
    high_sigma_min: float = 0.98,
) -> Tensor:
    """Video flow time, shape (B,): uniform or logit-normal, with an optional fraction of high-noise samples.

    The high-sigma fraction redraws `high_sigma_ratio` of the samples uniformly in [high_sigma_min, 1], which
    keeps the model trained near pure noise, where the feature forward of the action head operates.
    """
    if distribution == "uniform":
        t = sample_uniform_time(batch_size, device)
    elif distribution == "logit_normal":
        t = sample_logit_normal_time(batch_size, device, logit_normal_mean, logit_normal_std)
    else:
        raise ValueError(
            f"Unknown video time distribution {distribution!r}; use 'uniform' or 'logit_normal'."
        )
    if high_sigma_ratio > 0:
        high = torch.rand(batch_size, device=device) < high_sigma_ratio
        high_t = high_sigma_min + (1 - high_sigma_min) * torch.rand(batch_size, device=device)
        t = torch.where(high, high_t, t)
    return t


def sample_beta_time(
    batch_size: int, device: torch.device, alpha: float = 1.5, beta: float = 1.0, s: float = 0.999
) -> Tensor:
    """Action flow time tau = Beta(alpha, beta) / s, shape (B,).

    With alpha > beta the density grows towards t = 1 (noise), where predicting the velocity is hardest.
    The division by `s` follows the official GR00T/DiT4DiT code (tau may slightly exceed 1).
    """
    return beta_draw_to_time(sample_beta(alpha, beta, batch_size, device), s)


def beta_draw_to_time(beta_sample: Tensor, s: float) -> Tensor:
    """Map a raw Beta draw to the action flow time (kept separate so recorded draws can be replayed)."""
    return beta_sample / s


def time_to_bucket(t: Tensor, num_buckets: int) -> Tensor:
    """Discretise a flow time into the integer bucket that the timestep embeddings see: floor(t * N)."""
    return (t * num_buckets).long()


def sampling_time_to_bucket(t: Tensor, num_buckets: int, num_steps: int) -> Tensor:
    """Bucket of a time of LeRobot's `euler_integrate` loop (t = 1 - k/N, float32), as the official sampler
    computes it: int((1 - k/N) * num_buckets) in float64, e.g. N=10 gives 1000, 900, ..., 199, 99.

    The step index k is recovered from t first, so float32 rounding of t cannot move a bucket.
    """
    k = torch.round((1 - t.double()) * num_steps)
    return ((1 - k / num_steps) * num_buckets).floor().long()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """sum(mask * (pred - target)^2) / sum(mask); `mask` broadcasts to `pred`."""
    mask = mask.to(pred.dtype).expand_as(pred)
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1)


@dataclass
class ForwardNoise:
    """The random draws of one training forward; a field left None is drawn fresh from the global RNG.

    Shapes, for a batch of B with R = `num_action_noise_draws` (see `DiT4DiTPolicy.noise_shapes`):
        feature:     (B, 16, T_lat, h, w)      pure-noise latents of the feature forward (frame 0 is replaced)
        video_time:  (B,)                      video flow time
        video:       (B, 16, T_lat - 1, h, w)  noise of the future latent frames
        action:      (R * B, H, max_action_dim) action noise; row i belongs to sample i % B
        action_beta: (R * B,)                  raw Beta(alpha, beta) draws, mapped to the flow time by / s
    """

    feature: Tensor | None = None
    video_time: Tensor | None = None
    video: Tensor | None = None
    action: Tensor | None = None
    action_beta: Tensor | None = None

    @classmethod
    def draw(
        cls, shapes: dict[str, tuple[int, ...]], beta_alpha: float, beta_beta: float, generator=None
    ) -> ForwardNoise:
        """Every draw, of the given `shapes`, from `generator` (seeded from the global RNG when None)."""
        g = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
        # torch's Beta sampler takes no generator: seed a forked global RNG from `g` instead.
        beta_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(beta_seed)
            beta = torch.distributions.Beta(beta_alpha, beta_beta).sample(shapes["action_beta"])
        return cls(
            feature=torch.randn(shapes["feature"], generator=g),
            video_time=torch.rand(shapes["video_time"], generator=g),
            video=torch.randn(shapes["video"], generator=g),
            action=torch.randn(shapes["action"], generator=g),
            action_beta=beta,
        )

    def to(self, device: torch.device | str) -> ForwardNoise:
        """The same draws on `device` (drawn on the CPU, they replay bit-equal on any device)."""
        return ForwardNoise(
            **{f.name: None if (v := getattr(self, f.name)) is None else v.to(device) for f in fields(self)}
        )

    def check(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise ValueError naming every given draw whose shape differs from `shapes`."""
        bad = [
            f"{f.name} {tuple(value.shape)} (expected {shapes[f.name]})"
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None and tuple(value.shape) != tuple(shapes[f.name])
        ]
        if bad:
            raise ValueError(f"DiT4DiT: explicit noise of the wrong shape: {', '.join(bad)}.")


def check_finite_loss(name: str, value: float, batch: dict, training_forwards: int) -> None:
    """Stop on a non-finite loss term, naming the batch's frames. `value` is already on the host (it is
    logged): no extra sync.

    Raises:
        FloatingPointError naming the term, the training forward and the batch's episode/frame indices.
    """
    if math.isfinite(value):
        return
    keys = ("episode_index", "frame_index", "index")
    where = {k: batch[k].flatten().tolist()[:8] for k in keys if k in batch}
    raise FloatingPointError(
        f"DiT4DiT: {name} is {value} at training forward {training_forwards} (counted since "
        f"this process built the policy); batch {where or '(no index keys)'}. Check the dataset for "
        "NaN/Inf actions or state at those frames, or lower the learning rate. Training stops here so "
        "that no NaN is saved."
    )
