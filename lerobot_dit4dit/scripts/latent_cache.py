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

import argparse
import logging
from pathlib import Path

from lerobot_dit4dit.latent_cache import build


def main(argv: list[str] | None = None) -> None:
    import draccus
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.utils.import_utils import register_third_party_plugins

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, required=True, help="the .safetensors file to write")
    parser.add_argument("--batch-size", type=int, default=8)
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO)
    register_third_party_plugins()
    config_path = next((a.split("=", 1)[1] for a in rest if a.startswith("--config_path=")), None)
    rest = [a for a in rest if not a.startswith("--config_path=")]
    cfg = draccus.parse(TrainPipelineConfig, config_path=config_path, args=rest)
    cfg.output_dir = None  # nothing is trained here; validate() must not refuse an existing training folder
    cfg.validate()
    build(cfg, args.output, args.batch_size)


if __name__ == "__main__":
    main()
