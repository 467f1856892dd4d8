"""The official DiT4DiT training recipes: the one place their facts live.

`configs/<preset>.json` are the `lerobot-train` presets of these recipes (a test checks each against this
table), `convert_official` reads the cameras, state encoding and gripper handling of an official run from
here, and `configs/README.md` describes them for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    """One official recipe, in the terms of `DiT4DiTConfig`.

    Attributes:
        preset: name of its `lerobot-train` preset, `configs/<preset>.json`.
        cameras: LeRobot camera keys, in the tiling order of the official code (non-wrist views first).
        num_video_frames, video_frame_stride: the clip (frames 0, s, 2s, ...).
        chunk_size: action horizon; the official clients execute the whole chunk.
        state_encoding: sin/cos layout of the raw state ("sincos_interleaved" or "sincos_blocked").
        max_state_dim, max_action_dim: padded widths of the official action head.
        lr_video, lr_action: learning rates of the video DiT and the action head.
        binarize_gripper_dim: action dim the official client thresholds into the simulator's -1/+1, or None.
        official_data_mix: substrings of the official config's `datasets.vla_data.data_mix` that name it.
    """

    preset: str
    cameras: tuple[str, ...]
    num_video_frames: int
    video_frame_stride: int
    chunk_size: int
    state_encoding: str
    max_state_dim: int
    max_action_dim: int
    lr_video: float
    lr_action: float
    binarize_gripper_dim: int | None = None
    official_data_mix: tuple[str, ...] = ()


RECIPES: dict[str, Recipe] = {
    # HuggingFaceVLA/libero: LeRobot's own LIBERO set, camera names as `lerobot-eval --env.type=libero` emits.
    "libero": Recipe(
        preset="libero",
        cameras=("observation.images.image", "observation.images.image2"),
        num_video_frames=5,
        video_frame_stride=2,
        chunk_size=8,
        state_encoding="sincos_interleaved",
        max_state_dim=16,
        max_action_dim=8,
        lr_video=1e-5,
        lr_action=1e-4,
    ),
    # The official training data (IPEC-COMMUNITY LIBERO sets): wrist camera `wrist_image`, gripper 1 = open.
    "libero_ipec": Recipe(
        preset="libero_ipec",
        cameras=("observation.images.image", "observation.images.wrist_image"),
        num_video_frames=5,
        video_frame_stride=2,
        chunk_size=8,
        state_encoding="sincos_interleaved",
        max_state_dim=16,
        max_action_dim=8,
        lr_video=1e-5,
        lr_action=1e-4,
        binarize_gripper_dim=6,
        official_data_mix=("libero",),
    ),
    "robocasa_gr1": Recipe(
        preset="robocasa_gr1",
        cameras=("observation.images.ego_view",),
        num_video_frames=9,
        video_frame_stride=2,
        chunk_size=16,
        state_encoding="sincos_blocked",
        max_state_dim=64,
        max_action_dim=32,
        lr_video=1e-5,
        lr_action=1e-4,
        official_data_mix=("robocasa", "gr1"),
    ),
    # The official G1 launch script trains both parts at 1e-4.
    "unitree_g1": Recipe(
        preset="unitree_g1",
        cameras=("observation.images.ego_view",),
        num_video_frames=9,
        video_frame_stride=2,
        chunk_size=16,
        state_encoding="sincos_blocked",
        max_state_dim=64,
        max_action_dim=32,
        lr_video=1e-4,
        lr_action=1e-4,
        official_data_mix=("g1",),
    ),
}


# Presets that are not paper recipes: small offline recipes on the tiny random base
# (`lerobot_dit4dit.testing.tiny_base`), for the quickstart, the sample-efficiency study and the simulated G1.
OFFLINE_PRESETS = ("metaworld_quickstart", "metaworld_diffusion", "unitree_g1_sim")


def recipe_for_data_mix(data_mix: str) -> Recipe | None:
    """The recipe an official config's `data_mix` names (case-insensitive substring match), or None."""
    data_mix = data_mix.lower()
    return next((r for r in RECIPES.values() if any(key in data_mix for key in r.official_data_mix)), None)


def preset_path(name: str) -> Path:
    """The file of the `lerobot-train` preset `name` (`configs/<name>.json` of the repository), shipped in the
    wheel as package data so that installed commands never read the checkout around them.

    Raises:
        FileNotFoundError naming the preset and the ones that exist.
    """
    folder = files("lerobot_dit4dit") / "presets"
    path = Path(str(folder / f"{name}.json"))
    if not path.is_file():
        known = sorted(p.name.removesuffix(".json") for p in Path(str(folder)).glob("*.json"))
        raise FileNotFoundError(f"DiT4DiT: no preset {name!r}; the presets are {known}.")
    return path
