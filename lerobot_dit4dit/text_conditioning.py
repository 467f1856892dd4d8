"""Shipped text conditioning: the projected text context of each instruction, saved next to the weights, so
that inference on a shipped instruction never loads (or downloads) the 8B text encoder.

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

    python -m lerobot_dit4dit.text_conditioning --checkpoint outputs/.../pretrained_model \
        --instructions "put the bowl on the plate" "open the drawer"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration_dit4dit import DTYPES

if TYPE_CHECKING:
    from .modeling_dit4dit import DiT4DiTPolicy

logger = logging.getLogger(__name__)
FILENAME = "text_conditioning.safetensors"
FORMAT = "dit4dit-text-conditioning-v1"


def projection_sha256(policy: DiT4DiTPolicy) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the video DiT's `crossattn_proj` parameters."""
    digest = hashlib.sha256()
    for name, tensor in sorted(policy.video.crossattn_proj.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_text_conditioning(policy: DiT4DiTPolicy, directory: str | Path, instructions=None) -> Path | None:
    """Write the projected context of `instructions` (default: every instruction this policy has encoded or
    holds shipped) to `directory/FILENAME`; returns the file, or None when there is nothing to write."""
    video = policy.video
    if instructions is None:
        instructions = list(dict.fromkeys([*video.cached_prompts(), *video.shipped_instructions()]))
    path = Path(directory) / FILENAME
    if not instructions:
        return None
    contexts = video.project_prompts(list(instructions))
    dtype = DTYPES[policy.config.dtype]
    tensors = {f"context.{i}": contexts[p].to("cpu", dtype).contiguous() for i, p in enumerate(instructions)}
    cfg = policy.config
    metadata = {
        "format": FORMAT,
        "instructions": json.dumps(list(instructions)),
        "max_prompt_tokens": str(cfg.max_prompt_tokens),
        "base_model": cfg.base_model,
        "base_model_revision": str(cfg.base_model_revision),
        "projection_sha256": projection_sha256(policy),
        "dtype": cfg.dtype,
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_text_conditioning(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(instruction -> (L, D) context, metadata) of a shipped file."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(
                f"DiT4DiT: {path} is not a dit4dit text-conditioning file ({metadata.get('format')})."
            )
        instructions = json.loads(metadata["instructions"])
        contexts = {p: f.get_tensor(f"context.{i}") for i, p in enumerate(instructions)}
    return contexts, metadata


def load_text_conditioning(policy: DiT4DiTPolicy, path: str | Path) -> list[str]:
    """Install a shipped file on `policy` after checking it belongs to these weights; return its instructions.

    Raises:
        ValueError when the file was made for other projection weights or another `max_prompt_tokens`.
    """
    contexts, metadata = read_text_conditioning(path)
    cfg = policy.config
    if int(metadata["max_prompt_tokens"]) != cfg.max_prompt_tokens:
        raise ValueError(
            f"DiT4DiT: {path} was made with max_prompt_tokens={metadata['max_prompt_tokens']}, this config "
            f"has {cfg.max_prompt_tokens}."
        )
    if metadata["projection_sha256"] != projection_sha256(policy):
        raise ValueError(
            f"DiT4DiT: {path} was computed with other text-projection weights than this checkpoint's "
            "model.safetensors (hash mismatch); re-create it with "
            "python -m lerobot_dit4dit.text_conditioning."
        )
    device = policy.video.latents_mean.device
    policy.video.ship_text_context({p: c.to(device) for p, c in contexts.items()})
    return list(contexts)


def add_instructions(checkpoint: str | Path, instructions: list[str]) -> Path:
    """Encode `instructions` with the base's text encoder and add them to the checkpoint's shipped file."""
    from .modeling_dit4dit import DiT4DiTPolicy

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
