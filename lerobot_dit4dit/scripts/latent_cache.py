"""dit4dit-latent-cache: encode a dataset's VAE latents once.

Its --help is the documentation of `lerobot_dit4dit.latent_cache`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lerobot_dit4dit.latent_cache import build


def main(argv: list[str] | None = None) -> None:
    import draccus
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.utils.import_utils import register_third_party_plugins

    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.latent_cache"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
