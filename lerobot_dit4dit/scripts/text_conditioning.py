"""dit4dit-text-conditioning: add instructions to a checkpoint's shipped text conditioning.

Its --help is the documentation of `lerobot_dit4dit.text_conditioning`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy
from lerobot_dit4dit.text_conditioning import read_text_conditioning, save_text_conditioning

logger = logging.getLogger(__name__)


def add_instructions(checkpoint: str | Path, instructions: list[str]) -> Path:
    """Encode `instructions` with the base's text encoder and add them to the checkpoint's shipped file."""
    policy = DiT4DiTPolicy.from_pretrained(str(checkpoint))
    shipped = policy.video.shipped_instructions()
    everything = list(dict.fromkeys([*shipped, *instructions]))
    path = save_text_conditioning(policy, checkpoint, everything)
    logger.info("%s now ships %d instructions", path, len(everything))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.text_conditioning"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a local dit4dit pretrained_model directory")
    parser.add_argument("--instructions", nargs="+", required=True, help="instructions to add")
    args = parser.parse_args(argv)
    path = add_instructions(args.checkpoint, args.instructions)
    contexts, _ = read_text_conditioning(path)
    size = path.stat().st_size
    print(
        f"{path}: {len(contexts)} instructions, {size / 2**20:.2f} MiB "
        f"({size / len(contexts) / 2**20:.3f} MiB each)"
    )


if __name__ == "__main__":
    main()
