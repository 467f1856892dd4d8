"""The model's input tensors from a LeRobot batch (after the preprocessor): the cameras tiled side by side
into one clip, the current state zero-padded, and which future latent frames hold real (unpadded) frames.

Each raises an error naming the key and its shape when the batch does not fit the config."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.utils.constants import OBS_STATE
from torch import Tensor

from .configuration_dit4dit import DiT4DiTConfig


def tile_cameras(batch: dict[str, Tensor], config: DiT4DiTConfig, train: bool = False) -> Tensor:
    """`config.cameras` of `batch`, each (B, T, 3, H, W) or (B, 3, H, W), tiled side by side:
    (B, 3, T, H, n_cams * W) in [-1, 1]. With `train`, the frame count must be `num_video_frames` (unless the
    video DiT is not trained)."""
    frames = []
    for key in config.cameras:
        if key not in batch:
            raise KeyError(f"DiT4DiT: camera {key!r} missing from the batch (has {sorted(batch)}).")
        img = batch[key]
        if img.shape[0] == 0:
            raise ValueError(f"DiT4DiT: {key} holds an empty batch (shape {tuple(img.shape)}).")
        if img.ndim == 4:
            img = img.unsqueeze(1)
        if img.ndim != 5:
            raise ValueError(
                f"DiT4DiT: {key} has shape {tuple(img.shape)}; expected (B,C,H,W) or (B,T,C,H,W)."
            )
        frames.append(img)
    video = torch.cat(frames, dim=-1).transpose(1, 2)  # (B, T, C, H, W) -> (B, C, T, H, W)
    h, w = video.shape[-2:]
    if h % 16 or w % 16:
        raise ValueError(
            f"DiT4DiT: image size {h}x{w} (tiled over {len(frames)} camera(s)) must be divisible by 16; "
            f"resize with --policy.image_resolution."
        )
    n = video.shape[2]
    if train and config.training_mode != "action" and n != config.num_video_frames:
        raise ValueError(
            f"DiT4DiT: got {n} frames per camera but num_video_frames={config.num_video_frames} "
            f"(the dataset must load observation_delta_indices={config.video_frame_indices})."
        )
    if n % 4 != 1:
        raise ValueError(f"DiT4DiT: {n} video frames; the Wan VAE needs a frame count that is 1 mod 4.")
    return video


def padded_state(batch: dict[str, Tensor], config: DiT4DiTConfig) -> Tensor:
    """Current state, zero-padded: (B, max_state_dim) from (B, S) or (B, T, S)."""
    state = batch[OBS_STATE]
    if state.ndim == 3:
        state = state[:, 0]
    if state.shape[-1] != config.encoded_state_dim:
        raise ValueError(
            f"DiT4DiT: {OBS_STATE} has dim {state.shape[-1]}, "
            f"config expects {config.encoded_state_dim} "
            f"(state_dim {config.state_dim}, state_encoding={config.state_encoding!r})."
        )
    return F.pad(state.float(), (0, config.max_state_dim - state.shape[-1]))


def future_latent_mask(batch: dict, cameras: list[str], num_latent_frames: int, stride: int) -> Tensor | None:
    """(B, T_lat - 1) bool: True for future latent frames made only of real frames.

    LeRobot pads a clip that runs past the episode end by repeating the boundary frame and marks those
    frames in `<camera>_is_pad` (B, T). Latent frame k >= 1 encodes pixel frames 1 + 4(k-1) .. 4k; one
    with any padded pixel frame would teach the video DiT a frozen scene, so it leaves the video loss.
    None when the batch carries no padding flags (every frame counts).
    """
    pads = [batch[f"{k}_is_pad"] for k in cameras if f"{k}_is_pad" in batch]
    if not pads or num_latent_frames < 2:
        return None
    pad = torch.stack([p.bool() for p in pads]).any(0)  # (B, T)
    return ~torch.stack(
        [pad[:, 1 + stride * (k - 1) : 1 + stride * k].any(-1) for k in range(1, num_latent_frames)], 1
    )
