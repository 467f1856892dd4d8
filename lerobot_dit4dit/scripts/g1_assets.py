"""dit4dit-g1-assets: fetch or regenerate the simulated G1 model.

Its --help is the documentation of `lerobot_dit4dit.sim.assets`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lerobot_dit4dit.sim.assets import (
    CAPSULES_XML,
    cache_dir,
    fetch,
    make_capsules,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.sim.assets"].__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--capsules", action="store_true", help="regenerate the committed capsules MJCF")
    parser.add_argument("--dest", type=Path, default=None, help=f"cache folder (default {cache_dir()})")
    args = parser.parse_args()
    path = fetch(args.dest)
    if args.capsules:
        CAPSULES_XML.write_text(make_capsules(path))
        print(f"wrote {CAPSULES_XML}")


if __name__ == "__main__":
    main()
