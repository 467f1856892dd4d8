"""Shipped text conditioning: the projected text context of each instruction, saved next to the weights, so
that inference on a shipped instruction never loads (or downloads) the 7B text encoder.

What is stored: for each instruction, the output of the video DiT's `crossattn_proj` applied to its prompt
embeddings, (L, D) = (max_prompt_tokens, DiT text width): 512 x 1,024 values, 1 MiB per instruction in bf16 at
real width, against 103 MB for the raw 512 x 100,352 embeddings. It is exact while the projection weights
are the ones it was computed with; `projection_sha256` in the metadata ties the file to them, and loading
refuses a file made for other weights. Padded positions are kept: they differ between prompts (the encoder
attends to the whole padded sequence).

    text_conditioning.safetensors
        tensors   context.<i>: (L, D), one per instruction
        metadata  format, instructions (JSON list, index i), max_prompt_tokens, base_model,
                  base_model_revision, projection_sha256, dtype

Add instructions to an existing checkpoint on a machine that has the text encoder:

    dit4dit-text-conditioning --checkpoint outputs/.../pretrained_model \\
        --instructions "put the bowl on the plate" "open the drawer"
"""

from __future__ import annotations

import argparse
import logging
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
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
