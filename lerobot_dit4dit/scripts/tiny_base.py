"""dit4dit-tiny-base: build the small random Cosmos-Predict2.5-shaped base.

Its --help is the documentation of `lerobot_dit4dit.testing.tiny_base`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, fields, replace

from lerobot_dit4dit.testing.tiny_base import (
    TINY_BASE,
    TinyBaseSizes,
    build_tiny_cosmos_base,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.testing.tiny_base"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="directory to write the pipeline to")
    for f in fields(TinyBaseSizes):
        if isinstance(getattr(TINY_BASE, f.name), int):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=getattr(TINY_BASE, f.name))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = replace(TINY_BASE, **{k: getattr(args, k) for k in asdict(TINY_BASE) if hasattr(args, k)})
    path = build_tiny_cosmos_base(args.output, sizes, seed=args.seed)
    print(f"tiny Cosmos-Predict2.5 base written to {path}")


if __name__ == "__main__":
    main()
