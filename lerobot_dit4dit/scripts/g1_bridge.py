"""A simulated Unitree G1 behind the same ZMQ protocol as LeRobot's `run_g1_server`.

    MUJOCO_GL=egl dit4dit-g1-bridge --variant capsules --image-size 96

prints `READY` once every socket is bound and the first camera frame is out. Then the unmodified LeRobot
client (`unitree_g1_dit4dit`, or the stock `unitree_g1` with `is_simulation=false`) talks to it exactly as
to a robot:

- lowcmd   PULL :6000  JSON {"topic", "data": {"mode_pr", "mode_machine",
                       "motor_cmd": 35 x {mode,q,dq,kp,kd,tau}}}
- lowstate PUB  :6001  JSON {"topic", "data": {"motor_state": 35 x {q,dq,tau_est,temperature}, "imu_state",
                       "wireless_remote", "mode_machine"}}, every 4 ms (250 Hz)
- camera   PUB  :5555  LeRobot's ZMQ image format {"timestamps": {name: t}, "images": {name: base64 JPEG}},
                       rendered in its own process, no shadows
- scene    REP  :6002  JSON requests {"cmd": "scene"} -> button position, presses, times, command counts;
                       {"cmd": "reset", "seed": int | null} -> robot back to its start pose, counters zeroed

Physics: MuJoCo at 500 Hz in real time, the pelvis welded, per-joint PD torques from the last command
(`kp * (q - q_j) + kd * (dq - dq_j) + tau`) clipped at the motors' effort limits. Before the first command
it holds the start pose with LeRobot's default gains; afterwards it keeps the last command (mode 0 = no
torque). The task: press the red button on the table with the right hand's fingertip; after each press
the button respawns at a random reachable spot.
"""

from __future__ import annotations

import argparse
import logging

from lerobot_dit4dit.sim.g1_bridge import CAMERA_PORT, LOWCMD_PORT, LOWSTATE_PORT, SCENE_PORT, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
