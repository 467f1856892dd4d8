"""dit4dit-model-card: write the model card of a checkpoint.

Its --help is the documentation of `lerobot_dit4dit.model_card`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lerobot_dit4dit.configuration_dit4dit import DiT4DiTConfig
from lerobot_dit4dit.model_card import (
    build_model_card,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.model_card"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a local dit4dit pretrained_model directory")
    parser.add_argument("--eval-info", default=None, help="lerobot-eval's eval_info.json to publish")
    parser.add_argument(
        "--machine", default=None, help="where the evaluation ran, e.g. '1x H100, 2026-11-29'"
    )
    parser.add_argument("--output", default=None, help="default: <checkpoint>/README.md")
    args = parser.parse_args(argv)
    from lerobot.configs.train import TrainPipelineConfig

    from lerobot_dit4dit.text_conditioning import FILENAME, read_text_conditioning

    ckpt = Path(args.checkpoint)
    config = DiT4DiTConfig.from_pretrained(ckpt)
    train_cfg = None
    if (ckpt / "train_config.json").is_file():
        train_cfg = TrainPipelineConfig.from_pretrained(ckpt)
    shipped = list(read_text_conditioning(ckpt / FILENAME)[0]) if (ckpt / FILENAME).is_file() else []
    eval_info = json.loads(Path(args.eval_info).read_text()) if args.eval_info else None
    card = build_model_card(
        config,
        dataset_repo_id=train_cfg.dataset.repo_id if train_cfg else None,
        train_cfg=train_cfg,
        instructions=[(t, True) for t in shipped],
        eval_info=eval_info,
        eval_machine=args.machine,
    )
    out = Path(args.output) if args.output else ckpt / "README.md"
    card.save(str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
