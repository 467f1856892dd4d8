"""dit4dit-convert-official: convert an official DiT4DiT checkpoint.

Its --help is the documentation of `lerobot_dit4dit.convert_official`."""

from __future__ import annotations

import argparse
import json
import sys

from lerobot_dit4dit.configuration_dit4dit import DTYPES
from lerobot_dit4dit.convert_official import convert_official


def main() -> None:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.convert_official"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", required=True, help="official .pt/.safetensors, local or <org>/<repo>/<file>"
    )
    parser.add_argument("--config", required=True, help="the official config.yaml of that run")
    parser.add_argument("--output", required=True, help="directory to write the dit4dit checkpoint to")
    parser.add_argument(
        "--base-model", default=None, help="Cosmos-Predict2.5 base (hub id or dir); default: the yaml's"
    )
    parser.add_argument(
        "--base-model-revision", default=None, help="e.g. diffusers/base/post-trained for the hub id"
    )
    parser.add_argument("--cameras", default=None, help="comma-separated LeRobot camera keys in tiling order")
    parser.add_argument("--state-dim", type=int, default=None, help="raw state dim of the dataset/env")
    parser.add_argument("--action-dim", type=int, default=None, help="action dim of the dataset/env")
    parser.add_argument(
        "--state-encoding", default=None, choices=["none", "sincos_interleaved", "sincos_blocked"]
    )
    parser.add_argument("--dataset-statistics", default=None, help="official dataset_statistics.json")
    parser.add_argument(
        "--gripper-dim",
        default="auto",
        help="action dim the postprocessor binarises like the official LIBERO client: an index, "
        "'none', or 'auto' (the recipe's: 6 for LIBERO, none otherwise)",
    )
    parser.add_argument(
        "--checkpoint-dtype",
        default="float32",
        choices=tuple(DTYPES),
        help="dtype of the written model.safetensors: float32 (default; what training resumes from) or the "
        "dtype it will be served in, which halves the file and lets from_pretrained map it (map_weights)",
    )
    parser.add_argument(
        "--no-verify-frozen",
        action="store_true",
        help="do not compare the checkpoint's VAE/text encoder with the base model's",
    )
    args = parser.parse_args()
    out = convert_official(
        args.checkpoint,
        args.config,
        args.output,
        base_model=args.base_model,
        base_model_revision=args.base_model_revision,
        cameras=args.cameras.split(",") if args.cameras else None,
        state_dim=args.state_dim,
        action_dim=args.action_dim,
        state_encoding=args.state_encoding,
        dataset_statistics=args.dataset_statistics,
        verify_frozen=not args.no_verify_frozen,
        checkpoint_dtype=args.checkpoint_dtype,
        gripper_dim={"auto": "auto", "none": None}.get(args.gripper_dim.lower())
        if not args.gripper_dim.lstrip("-").isdigit()
        else int(args.gripper_dim),
    )
    print(json.dumps(json.loads((out / "conversion.json").read_text()), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
