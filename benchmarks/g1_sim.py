"""Figures of the simulated G1: physics step, head-camera render, and the rates the bridge actually publishes.

    MUJOCO_GL=egl python -m benchmarks.g1_sim [--image-size 64] [--seconds 5]

Prints one line per figure and a JSON summary. Run it alone: the rates depend on what else the CPU runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def time_in_process(variant: str, size: int, n: int = 200) -> dict:
    """Median mj_step and head-camera render times of `variant` in this process (no bridge)."""
    import mujoco

    from lerobot_dit4dit.sim import g1_scene
    from lerobot_dit4dit.sim.g1_bridge import G1Sim

    sim = G1Sim(variant)
    steps = []
    for _ in range(n * 10):
        start = time.perf_counter()
        sim.step(0.0)
        steps.append(time.perf_counter() - start)
    renderer = mujoco.Renderer(sim.model, size, size)
    renders = []
    for _ in range(n // 4):
        start = time.perf_counter()
        renderer.update_scene(sim.data, camera=g1_scene.HEAD_CAMERA)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.render()
        renders.append(time.perf_counter() - start)
    renderer.close()
    return {
        f"{variant}_step_ms": 1e3 * float(np.median(steps)),
        f"{variant}_render_ms_{size}px": 1e3 * float(np.median(renders)),
    }


def bridge_rates(size: int, seconds: float) -> dict:
    """Messages per second on the lowstate (6001) and camera (5555) sockets of a running bridge."""
    import zmq

    from lerobot_dit4dit.sim.g1_loop import bridge

    with bridge(size), zmq.Context() as ctx:
        counts = {}
        for name, port in (("lowstate_hz", 6001), ("camera_hz", 5555)):
            sock = ctx.socket(zmq.SUB)
            sock.setsockopt_string(zmq.SUBSCRIBE, "")
            sock.setsockopt(zmq.RCVTIMEO, 1000)
            sock.connect(f"tcp://127.0.0.1:{port}")
            sock.recv()  # connected and flowing
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                sock.recv()
                n += 1
            counts[name] = n / (time.perf_counter() - start)
            sock.close(linger=0)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--variants", nargs="+", default=["capsules"], choices=["capsules", "meshes"])
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    figures = {"load_average": os.getloadavg()[0]}
    for variant in args.variants:
        figures.update(time_in_process(variant, args.image_size))
    figures.update(bridge_rates(args.image_size, args.seconds))
    for key, value in figures.items():
        print(f"{key}: {value:.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
