"""dit4dit-g1-bridge: serve the simulated G1.

Its --help is the documentation of `lerobot_dit4dit.sim.g1_bridge`."""

from __future__ import annotations

import argparse
import logging
import sys

from lerobot_dit4dit.sim.g1_bridge import CAMERA_PORT, LOWCMD_PORT, LOWSTATE_PORT, SCENE_PORT, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.sim.g1_bridge"].__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--variant", choices=["capsules", "meshes"], default="capsules")
    parser.add_argument("--image-size", type=int, default=96, help="head camera, square, 64-224 px")
    parser.add_argument("--camera-fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0, help="button positions")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 to serve a network")
    parser.add_argument("--lowcmd-port", type=int, default=LOWCMD_PORT)
    parser.add_argument("--lowstate-port", type=int, default=LOWSTATE_PORT)
    parser.add_argument("--camera-port", type=int, default=CAMERA_PORT)
    parser.add_argument("--scene-port", type=int, default=SCENE_PORT)
    args = parser.parse_args(argv)
    if not 64 <= args.image_size <= 224:
        parser.error(f"--image-size {args.image_size}: expected 64-224")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s g1_bridge %(levelname)s %(message)s")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
