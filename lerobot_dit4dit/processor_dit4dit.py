"""Pre- and post-processing pipelines of the DiT4DiT policy.

Pre:  rename_observations_processor -> to_batch_processor -> device_processor -> normalizer_processor
      -> dit4dit_observation_processor (camera check, resize to `image_resolution`, [0,1] -> [-1,1],
      state NaN check).
Post: [dit4dit_action_clip_processor] -> unnormalizer_processor -> [dit4dit_gripper_binarize_processor]
      -> device_processor (cpu); the bracketed steps when `clip_normalized_actions` / `binarize_gripper_dim`
      are set.

The standard steps keep their registry names, so `lerobot-eval`, `lerobot-rollout` and fine-tuning can
override them by name (e.g. new dataset stats or a rename map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.configs import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    ObservationProcessorStep,
    PolicyAction,
    PolicyActionProcessorStep,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
)
from lerobot.processor.factory import make_default_policy_processor_steps, make_policy_processor_pipelines
from lerobot.utils.constants import OBS_STATE

from .configuration_dit4dit import DiT4DiTConfig


def resize_images(images: torch.Tensor, resolution) -> torch.Tensor:
    """(N, C, H, W) float images -> (N, C, *resolution): the policy's resize (bilinear, antialiased), also
    used by recorders that store downsized frames, so training data and evaluation inputs match."""
    if tuple(images.shape[-2:]) == tuple(resolution):
        return images
    return F.interpolate(images, size=tuple(resolution), mode="bilinear", antialias=True)


@ProcessorStepRegistry.register("dit4dit_observation_processor")
@dataclass
class DiT4DiTObservationProcessorStep(ObservationProcessorStep):
    """Checks the observation and brings every camera to the video DiT's input format.

    Images arrive as (B, C, H, W) or, with future frames, (B, T, C, H, W) in [0, 1]. Each camera in
    `cameras` is resized to `resolution` (bilinear, antialiased) and mapped to [-1, 1], the range the Wan
    VAE expects.

    The (normalised) state is then encoded as `state_encoding` says (see `DiT4DiTConfig.state_encoding`).

    Attributes:
        cameras: image keys the policy needs, in tiling order.
        resolution: (height, width) of each camera after resizing.
        state_encoding: "none", "sincos_interleaved" or "sincos_blocked".
    """

    cameras: list[str] = field(default_factory=list)
    resolution: tuple[int, int] = (224, 224)
    state_encoding: str = "none"

    def observation(self, observation: dict) -> dict:
        missing = [k for k in self.cameras if k not in observation]
        if missing:
            available = sorted(k for k in observation if "image" in k and not k.endswith("_is_pad"))
            raise KeyError(
                f"DiT4DiT: missing camera(s) {missing}. Cameras in this observation: {available}. "
                "Rename them with --rename_map or set --policy.camera_order."
            )
        state = observation.get(OBS_STATE)
        if isinstance(state, torch.Tensor) and torch.isnan(state).any():
            bad = torch.isnan(state).nonzero()[:5].tolist()
            raise ValueError(f"DiT4DiT: {OBS_STATE} contains NaN (first indices {bad}).")
        out = dict(observation)
        for key in self.cameras:
            out[key] = self._to_model_range(key, observation[key])
        if isinstance(state, torch.Tensor) and self.state_encoding != "none":
            out[OBS_STATE] = encode_state(state, self.state_encoding)
        return out

    def _to_model_range(self, key: str, image: torch.Tensor) -> torch.Tensor:
        if image.ndim not in (4, 5):
            raise ValueError(
                f"DiT4DiT: {key} has shape {tuple(image.shape)}; expected (B,C,H,W) or (B,T,C,H,W)."
            )
        if image.shape[-3] != 3:
            raise ValueError(
                f"DiT4DiT: {key} has {image.shape[-3]} channels (shape {tuple(image.shape)}); expected 3."
            )
        lead = image.shape[:-3]
        image = image.reshape(-1, *image.shape[-3:]).float()
        image = resize_images(image, self.resolution).clamp(0.0, 1.0) * 2.0 - 1.0
        return image.reshape(*lead, *image.shape[-3:])

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features

    def get_config(self) -> dict[str, Any]:
        return {
            "cameras": list(self.cameras),
            "resolution": list(self.resolution),
            "state_encoding": self.state_encoding,
        }


@ProcessorStepRegistry.register("dit4dit_action_clip_processor")
@dataclass
class ActionClipProcessorStep(PolicyActionProcessorStep):
    """Clip normalised actions to [low, high] before un-normalising (the official clients clip to [-1, 1])."""

    low: float = -1.0
    high: float = 1.0

    def action(self, action: PolicyAction) -> PolicyAction:
        return action.clamp(self.low, self.high)

    def transform_features(self, features):
        return features

    def get_config(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


@ProcessorStepRegistry.register("dit4dit_gripper_binarize_processor")
@dataclass
class GripperBinarizeProcessorStep(PolicyActionProcessorStep):
    """Map a continuous gripper channel to two values: `value_at_or_above` if a >= threshold, else
    `value_below`.

    The official LIBERO client thresholds the model's gripper output at 0.5 (1 = open) and sends -1 (open) /
    +1 (close) to the simulator: dim=6, threshold=0.5, value_at_or_above=-1, value_below=1.
    """

    dim: int = -1
    threshold: float = 0.5
    value_at_or_above: float = -1.0
    value_below: float = 1.0

    def action(self, action: PolicyAction) -> PolicyAction:
        if not -action.shape[-1] <= self.dim < action.shape[-1]:
            raise ValueError(
                f"gripper dim {self.dim} is out of range for actions of shape {tuple(action.shape)}."
            )
        action = action.clone()
        g = action[..., self.dim]
        action[..., self.dim] = torch.where(g >= self.threshold, self.value_at_or_above, self.value_below).to(
            g.dtype
        )
        return action

    def transform_features(self, features):
        return features

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "threshold": self.threshold,
            "value_at_or_above": self.value_at_or_above,
            "value_below": self.value_below,
        }


def encode_state(state: torch.Tensor, encoding: str) -> torch.Tensor:
    """(..., D) -> (..., 2D) sin/cos features, interleaved per dim or as [sin..., cos...] blocks."""
    sin, cos = torch.sin(state), torch.cos(state)
    if encoding == "sincos_interleaved":
        return torch.stack([sin, cos], dim=-1).flatten(-2)
    if encoding == "sincos_blocked":
        return torch.cat([sin, cos], dim=-1)
    raise ValueError(f"Unknown state_encoding {encoding!r}.")


def make_dit4dit_pre_post_processors(
    config: DiT4DiTConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Build the DiT4DiT pre/post pipelines from the policy config and the dataset statistics."""
    s = make_default_policy_processor_steps(config, dataset_stats)
    observation = DiT4DiTObservationProcessorStep(
        cameras=config.cameras,
        resolution=tuple(config.image_resolution),
        state_encoding=config.state_encoding,
    )
    output_steps = [s.unnormalize, s.to_cpu]
    if config.binarize_gripper_dim is not None:
        output_steps.insert(1, GripperBinarizeProcessorStep(dim=config.binarize_gripper_dim))
    if config.clip_normalized_actions:
        output_steps.insert(0, ActionClipProcessorStep(-1.0, 1.0))
    return make_policy_processor_pipelines(
        input_steps=[s.rename_observations, s.add_batch_dim, s.to_device, s.normalize, observation],
        output_steps=output_steps,
    )
