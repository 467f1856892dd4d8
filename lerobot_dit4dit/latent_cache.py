"""An optional cache of the frozen VAE's latents for training.

The Wan VAE is frozen, so the latents of a training clip never change; encoding them is about a quarter of a
medium-width training step. This command encodes every clip of a dataset once, with exactly the preprocessing
`lerobot-train` applies (same config, delta timestamps, processors and camera tiling):

    dit4dit-latent-cache --output outputs/latents.safetensors \
        --config_path=configs/metaworld_quickstart.json [any other lerobot-train flag]
    lerobot-train --config_path=configs/metaworld_quickstart.json \
        --policy.latent_cache=outputs/latents.safetensors

Training then reads the latents of each sample by its dataset `index` instead of running the VAE, and the
dataset decodes only the current frame instead of the whole clip (`observation_delta_indices`). The file also
holds which future latent frames of each clip are real (not padding past the episode end), which the video
loss needs, and records what the latents depend on (cameras, resolution, frames, stride, base model,
dataset); a policy with other settings refuses it, naming the difference. Image augmentations would make
cached latents wrong, so they are refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch import Tensor

from .inputs import tile_cameras

logger = logging.getLogger(__name__)

KEYS = (
    "cameras",
    "image_resolution",
    "num_video_frames",
    "video_frame_stride",
    "base_model",
    "base_model_revision",
)


def fingerprint(config) -> dict:
    """What cached latents depend on, from a DiT4DiTConfig."""
    out = {k: getattr(config, k) for k in KEYS}
    out["cameras"] = list(out["cameras"])
    out["image_resolution"] = list(out["image_resolution"])
    return out


def dataset_identity(meta) -> dict:
    """Which dataset cached latents belong to, from a LeRobotDatasetMetadata: repo id, resolved root and
    frame count. Indices alone cannot tell: another (or a larger) dataset may have every cached index."""
    root = str(Path(meta.root).resolve())
    return {"dataset": meta.repo_id, "root": root, "dataset_frames": meta.total_frames}


class LatentCache:
    """Cached latents, looked up by dataset index: `latents(index (B,)) -> (B, 16, T_lat, h, w)`."""

    def __init__(self, path: str | Path, config, dataset: dict | None = None):
        """`dataset`: the training dataset's `dataset_identity`; when given, a cache built for another one
        is refused (a checkpoint's config keeps its cache path when fine-tuned elsewhere)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"DiT4DiT: latent_cache {path} does not exist; build it with "
                "`dit4dit-latent-cache --output <file> <your lerobot-train flags>`."
            )
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("dit4dit_latent_cache", "{}"))
            index, latents = f.get_tensor("index"), f.get_tensor("latents")
            keys = set(f.keys())
            future_mask = f.get_tensor("future_mask") if "future_mask" in keys else None
        if future_mask is None and latents.shape[2] > 1 and config.training_mode != "action":
            raise ValueError(
                f"DiT4DiT: latent_cache {path} holds no future_mask (it was built by an older version); "
                "rebuild it with `dit4dit-latent-cache`."
            )
        expected = fingerprint(config)
        diff = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
        if diff:
            raise ValueError(
                f"DiT4DiT: latent_cache {path} was built with other settings; (cache, policy): {diff}. "
                "Rebuild it with this policy's config."
            )
        if dataset is not None:
            diff = {k: (meta.get(k), v) for k, v in dataset.items() if meta.get(k) != v}
            if diff:
                raise ValueError(
                    f"DiT4DiT: latent_cache {path} was built for another dataset; (cache, training): {diff}. "
                    "Rebuild it for this dataset, or drop --policy.latent_cache."
                )
        self.path = path
        self.latents = latents
        self.future_mask = future_mask
        self.row = torch.full((int(index.max()) + 1,), -1, dtype=torch.long)
        self.row[index] = torch.arange(len(index))

    def batch_latents(self, batch: dict, device, current_only: bool = False) -> tuple[Tensor, Tensor | None]:
        """The latents (B, 16, T_lat, h, w) and future mask (B, T_lat - 1) or None of a training batch, by its
        dataset `index`; with `current_only`, latent frame 0 only and no mask."""
        if "index" not in batch:
            raise KeyError("DiT4DiT: latent_cache needs each sample's dataset `index` in the batch.")
        latents, future_mask = self.lookup(batch["index"])
        if current_only:
            return latents[:, :, :1].to(device), None
        return latents.to(device), None if future_mask is None else future_mask.to(device)

    def lookup(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """index (B,) -> latents (B, 16, T_lat, h, w), future mask (B, T_lat - 1) bool (None: no future)."""
        index = index.reshape(-1).long().cpu()
        rows = torch.where(index < len(self.row), self.row[index.clamp(max=len(self.row) - 1)], -1)
        if (rows < 0).any():
            missing = index[rows < 0][:5].tolist()
            raise KeyError(
                f"DiT4DiT: dataset indices {missing} are not in latent_cache {self.path}: it was built for "
                "another dataset (or part of one)."
            )
        return self.latents[rows], None if self.future_mask is None else self.future_mask[rows]


def build(cfg, output: Path, batch_size: int = 8) -> dict:
    """Encode every sample of `cfg`'s dataset (a TrainPipelineConfig) into `output`; returns a summary."""
    from lerobot.datasets.factory import make_dataset
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from safetensors.torch import save_file

    if cfg.dataset.image_transforms.enable:
        raise ValueError(
            "DiT4DiT: image augmentations change every epoch's frames; cached latents cannot be used."
        )
    cfg.policy.latent_cache = None  # the clips themselves are loaded and encoded here
    dataset = make_dataset(cfg)
    policy = make_policy(cfg.policy, ds_meta=dataset.meta)
    policy.eval()
    preprocessor, _ = make_pre_post_processors(
        cfg.policy, pretrained_path=cfg.policy.pretrained_path, dataset_stats=dataset.meta.stats
    )
    mode = cfg.policy.training_mode
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.num_workers
    )
    indices, latents, masks = [], [], []
    start, done = time.perf_counter(), 0
    with torch.no_grad():
        for batch in loader:
            batch = preprocessor(batch)
            video = tile_cameras(batch, policy.config, train=True)
            latent = policy.video.encode_video(video if mode != "action" else video[:, :, :1]).cpu()
            mask = policy.future_latent_mask(batch, latent.shape[2])
            if mask is None:  # no padding flags: every future latent frame is real
                mask = torch.ones(latent.shape[0], max(latent.shape[2] - 1, 0), dtype=torch.bool)
            latents.append(latent)
            masks.append(mask.cpu())
            indices.append(batch["index"].reshape(-1).cpu())
            done += len(indices[-1])
            if len(indices) % 20 == 0 or done == len(dataset):
                rate = done / (time.perf_counter() - start)
                print(f"[latent_cache] {done}/{len(dataset)} samples ({rate:.1f}/s)", flush=True)
    index, stacked = torch.cat(indices), torch.cat(latents).contiguous()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    meta = fingerprint(cfg.policy)
    meta.update(dataset_identity(dataset.meta), samples=len(index))
    save_file(
        {"index": index, "latents": stacked, "future_mask": torch.cat(masks).contiguous()},
        str(partial),
        metadata={"dit4dit_latent_cache": json.dumps(meta)},
    )
    partial.replace(output)  # never a half-written cache under the real name
    summary = {"samples": len(index), "shape": list(stacked.shape[1:]), "MiB": stacked.numel() * 4 / 2**20}
    print(f"[latent_cache] wrote {output}: {summary}", flush=True)
    return summary
