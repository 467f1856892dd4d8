"""Pre- and post-processing pipelines of the DiT4DiT policy.

Pre:  rename_observations_processor -> to_batch_processor -> dit4dit_input_check_processor (keys, shapes,
      finite values, image range, task strings: before normalisation, so errors name the raw input)
      -> device_processor -> normalizer_processor -> dit4dit_observation_processor (uint8 -> [0,1], resize to
      `image_resolution`, [0,1] -> [-1,1], state encoding).
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
    ProcessorStep,
    ProcessorStepRegistry,
    TransitionKey,
)
from lerobot.processor.factory import make_default_policy_processor_steps, make_policy_processor_pipelines
from lerobot.processor.relative_action_processor import (
    AbsoluteActionsProcessorStep,
    RelativeActionsProcessorStep,
)
from lerobot.utils.constants import ACTION, OBS_STATE

from .configuration_dit4dit import DiT4DiTConfig
from .text_conditioning import check_tasks


def resize_images(images: torch.Tensor, resolution) -> torch.Tensor:
    """(N, C, H, W) float images -> (N, C, *resolution): the policy's resize (bilinear, antialiased), also
    used by recorders that store downsized frames, so training data and evaluation inputs match."""
    if tuple(images.shape[-2:]) == tuple(resolution):
        return images
    return F.interpolate(images, size=tuple(resolution), mode="bilinear", antialias=True)


# Float images may overshoot [0, 1] by this much (resampling, codecs) before they are called out of range.
IMAGE_RANGE_TOLERANCE = 1e-3


@ProcessorStepRegistry.register("dit4dit_input_check_processor")
@dataclass
class DiT4DiTInputCheckProcessorStep(ProcessorStep):
    """Refuses inputs the policy cannot use, naming the key, the value and the fix; changes nothing.

    It runs before normalisation, so a wrong state width or a NaN is reported as the user sent it rather
    than as a tensor-size error deep in the normaliser. Checked: the state is present, `state_dim` wide and
    finite; every camera is present, finite and either uint8 or float in [0, 1]; a training action is
    `action_dim` wide and finite; tasks are strings; the batch is not empty.

    Attributes:
        cameras: image keys the policy needs.
        state_dim: raw state width (before `state_encoding`).
        action_dim: action width.
    """

    cameras: list[str] = field(default_factory=list)
    state_dim: int | None = None
    action_dim: int | None = None

    def __call__(self, transition):
        try:
            return self._check(transition)
        except (KeyError, TypeError, ValueError) as e:
            # Name the dataset rows of a training batch, so a bad frame can be found and fixed.
            extra = transition.get(TransitionKey.COMPLEMENTARY_DATA) or {}
            rows = {k: _first(extra[k]) for k in ("episode_index", "frame_index", "index") if k in extra}
            if rows:
                raise type(e)(f"{e.args[0] if e.args else e} Batch rows: {rows}.") from e
            raise

    def _check(self, transition):
        observation = transition.get(TransitionKey.OBSERVATION) or {}
        for key in self.cameras:
            if key not in observation:
                available = sorted(k for k in observation if "image" in k and not k.endswith("_is_pad"))
                raise KeyError(
                    f"DiT4DiT: missing camera {key!r}. Cameras in this observation: {available}. "
                    "Rename them with --rename_map or set --policy.camera_order."
                )
            _check_image(key, observation[key])
        if self.state_dim is not None:
            if OBS_STATE not in observation:
                raise KeyError(
                    f"DiT4DiT: the observation has no {OBS_STATE!r} (keys: {sorted(observation)}); "
                    f"the policy needs the {self.state_dim}-D state it was trained with."
                )
            state = observation[OBS_STATE]
            _check_tensor(OBS_STATE, state)
            if state.shape[-1] != self.state_dim:
                raise ValueError(
                    f"DiT4DiT: {OBS_STATE} has shape {tuple(state.shape)}, last dim {state.shape[-1]}; the "
                    f"policy expects {self.state_dim} (its input_features)."
                )
        action = transition.get(TransitionKey.ACTION)
        if isinstance(action, torch.Tensor):
            _check_tensor(ACTION, action)
            if self.action_dim is not None and action.shape[-1] != self.action_dim:
                raise ValueError(
                    f"DiT4DiT: {ACTION} has shape {tuple(action.shape)}, last dim {action.shape[-1]}; the "
                    f"policy expects {self.action_dim} (its output_features)."
                )
        tasks = (transition.get(TransitionKey.COMPLEMENTARY_DATA) or {}).get("task")
        if tasks is not None:
            check_tasks(tasks)
        return transition

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features

    def get_config(self) -> dict[str, Any]:
        return {"cameras": list(self.cameras), "state_dim": self.state_dim, "action_dim": self.action_dim}


def _first(x, n: int = 8) -> list:
    return x.flatten()[:n].tolist() if isinstance(x, torch.Tensor) else list(x)[:n]


def _check_tensor(key: str, x) -> None:
    """Non-empty and finite, or an error naming `key` and the first bad indices."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"DiT4DiT: {key} must be a tensor, got {type(x).__name__}.")
    if x.numel() == 0 or (x.ndim > 0 and x.shape[0] == 0):
        raise ValueError(f"DiT4DiT: {key} is empty (shape {tuple(x.shape)}); the batch holds no samples.")
    if x.is_floating_point():
        finite = torch.isfinite(x)
        if not finite.all():
            bad = (~finite).nonzero()[:5].tolist()
            raise ValueError(f"DiT4DiT: {key} contains NaN or Inf (first indices {bad}).")


def _check_image(key: str, image) -> None:
    """uint8 images pass; float images must be finite and in [0, 1] (not 0-255, not [-1, 1])."""
    _check_tensor(key, image)
    if image.dtype == torch.uint8:
        return
    if not image.is_floating_point():
        raise TypeError(f"DiT4DiT: {key} has dtype {image.dtype}; expected uint8 or float images in [0, 1].")
    lo, hi = float(image.min()), float(image.max())
    if lo < -IMAGE_RANGE_TOLERANCE or hi > 1 + IMAGE_RANGE_TOLERANCE:
        raise ValueError(
            f"DiT4DiT: {key} has values in [{lo:.3g}, {hi:.3g}]; float images must be in [0, 1] "
            "(uint8 images are scaled by 1/255). Divide 0-255 images by 255, map [-1, 1] images with "
            "(x + 1) / 2."
        )


@ProcessorStepRegistry.register("dit4dit_current_state_processor")
@dataclass
class CurrentStateProcessorStep(ObservationProcessorStep):
    """(B, T, S) training states -> (B, S) current state: the model reads only frame 0 of the state, and
    LeRobot's relative-action step subtracts a (B, S) state from the (B, H, A) action chunk."""

    def observation(self, observation: dict) -> dict:
        state = observation.get(OBS_STATE)
        if isinstance(state, torch.Tensor) and state.ndim == 3:
            observation = {**observation, OBS_STATE: state[:, 0]}
        return observation

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


@ProcessorStepRegistry.register("dit4dit_observation_processor")
@dataclass
class DiT4DiTObservationProcessorStep(ObservationProcessorStep):
    """Checks the observation and brings every camera to the video DiT's input format.

    Images arrive as (B, C, H, W) or, with future frames, (B, T, C, H, W), uint8 or float in [0, 1]
    (checked by `DiT4DiTInputCheckProcessorStep`); uint8 is scaled by 1/255. Each camera in
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
        if isinstance(state, torch.Tensor):
            _check_tensor(OBS_STATE, state)  # again after normalisation: a zero min/max range gives NaN
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
        is_uint8 = image.dtype == torch.uint8
        image = image.reshape(-1, *image.shape[-3:]).float()
        if is_uint8:
            image = image / 255.0
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


def widen_narrow_stats(stats: dict[str, dict], keys, min_range: float) -> dict[str, dict]:
    """A copy of `stats` where, for each of `keys`, every dimension's min/max and q01/q99 span at least
    `min_range` (widened around their centre) and its std is at least `min_range / 2`.

    Per-dimension ranges: (D,) tensors or arrays; other entries and keys are returned unchanged."""
    out = dict(stats)
    for key in keys:
        if key not in stats:
            continue
        entry = dict(stats[key])
        for low, high in (("min", "max"), ("q01", "q99")):
            if low in entry and high in entry:
                lo, hi = (torch.as_tensor(entry[k], dtype=torch.float32) for k in (low, high))
                centre, half = (lo + hi) / 2, torch.clamp((hi - lo) / 2, min=min_range / 2)
                entry[low], entry[high] = centre - half, centre + half
        if "std" in entry:
            entry["std"] = torch.clamp(torch.as_tensor(entry["std"], dtype=torch.float32), min=min_range / 2)
        out[key] = entry
    return out


def make_dit4dit_pre_post_processors(
    config: DiT4DiTConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Build the DiT4DiT pre/post pipelines from the policy config and the dataset statistics."""
    if dataset_stats is not None and config.min_normalization_range > 0:
        dataset_stats = widen_narrow_stats(dataset_stats, (OBS_STATE, ACTION), config.min_normalization_range)
    s = make_default_policy_processor_steps(config, dataset_stats)
    observation = DiT4DiTObservationProcessorStep(
        cameras=config.cameras,
        resolution=tuple(config.image_resolution),
        state_encoding=config.state_encoding,
    )
    # LeRobot's relative-action pair (off unless `use_relative_actions`): action - state before normalising,
    # + state after un-normalising. Always present, so lerobot-train's overrides find them by name.
    has_dims = config.robot_state_feature is not None and config.action_feature is not None
    if config.use_relative_actions and has_dims and config.state_dim < config.action_dim:
        raise ValueError(
            f"DiT4DiT: use_relative_actions subtracts the state from the action, dim by dim, but the "
            f"state has {config.state_dim} dims and the action {config.action_dim}."
        )
    relative = RelativeActionsProcessorStep(
        enabled=config.use_relative_actions,
        exclude_joints=list(config.relative_exclude_joints),
        action_names=config.action_feature_names,
    )
    absolute = AbsoluteActionsProcessorStep(enabled=config.use_relative_actions, relative_step=relative)
    output_steps = [s.unnormalize, absolute, s.to_cpu]
    if config.binarize_gripper_dim is not None:
        output_steps.insert(2, GripperBinarizeProcessorStep(dim=config.binarize_gripper_dim))
    if config.clip_normalized_actions:
        output_steps.insert(0, ActionClipProcessorStep(-1.0, 1.0))
    check = DiT4DiTInputCheckProcessorStep(
        cameras=config.cameras,
        state_dim=config.state_dim if config.robot_state_feature is not None else None,
        action_dim=config.action_dim if config.action_feature is not None else None,
    )
    return make_policy_processor_pipelines(
        input_steps=[
            s.rename_observations,
            s.add_batch_dim,
            check,
            s.to_device,
            CurrentStateProcessorStep(),
            relative,
            s.normalize,
            observation,
        ],
        output_steps=output_steps,
    )
