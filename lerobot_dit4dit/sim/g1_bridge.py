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

import base64
import json
import logging
import multiprocessing as mp
import os
import signal
import time

import numpy as np
from lerobot.robots.unitree_g1.config_unitree_g1 import _DEFAULT_KD, _DEFAULT_KP

from . import g1_scene

logger = logging.getLogger(__name__)

LOWCMD_PORT, LOWSTATE_PORT, CAMERA_PORT, SCENE_PORT = 6000, 6001, 5555, 6002
NUM_MOTORS = 35
STATE_EVERY = 2  # physics steps per published state: 500 Hz / 2 = 250 Hz

# The start pose: arms forward above the table (elbows straight out), everything else at zero.
START_POSE = np.zeros(g1_scene.NUM_JOINTS)
START_POSE[[16, 23]] = [0.15, -0.15]  # shoulder roll: hands slightly apart


class G1Sim:
    """Physics and task, no I/O. `command` takes the 35 motor dicts of a lowcmd; `step` advances 2 ms."""

    def __init__(self, variant: str = "capsules", seed: int = 0):
        import mujoco

        self.mj = mujoco
        self.model = g1_scene.build_model(variant)
        self.data = mujoco.MjData(self.model)
        self.joints = g1_scene.joint_table(self.model)
        self.fingertip = self.model.site(g1_scene.FINGERTIP_SITE).id
        self.button_mocap = self.model.body("button").mocapid[0]
        self.rng = np.random.default_rng(seed)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.mj.mj_resetData(self.model, self.data)
        self.data.qpos[: g1_scene.NUM_JOINTS] = START_POSE
        self.q_des = START_POSE.copy()
        self.dq_des = np.zeros(g1_scene.NUM_JOINTS)
        # LeRobot's default G1 gains hold the start pose until the first command.
        self.kp = np.asarray(_DEFAULT_KP, dtype=np.float64)
        self.kd = np.asarray(_DEFAULT_KD, dtype=np.float64)
        self.tau_ff = np.zeros(g1_scene.NUM_JOINTS)
        self.enabled = np.ones(g1_scene.NUM_JOINTS, dtype=bool)
        self.mj.mj_forward(self.model, self.data)
        self.set_button(g1_scene.sample_button(self.rng))
        self.presses = 0
        self.press_times: list[float] = []
        self.commands = 0
        self.commands_outside_limits = 0
        self.max_command_step = 0.0
        self.last_command_q: np.ndarray | None = None

    def set_button(self, pos: np.ndarray) -> None:
        self.data.mocap_pos[self.button_mocap] = pos

    @property
    def button(self) -> np.ndarray:
        return self.data.mocap_pos[self.button_mocap].copy()

    def command(self, motor_cmd: list[dict]) -> None:
        n = g1_scene.NUM_JOINTS
        if len(motor_cmd) < n:
            raise ValueError(f"lowcmd with {len(motor_cmd)} motors; the G1 needs {n}")
        fields = np.array(
            [[float(m.get(k, 0.0)) for k in ("mode", "q", "dq", "kp", "kd", "tau")] for m in motor_cmd[:n]]
        )
        if not np.isfinite(fields).all():
            logger.warning("lowcmd with NaN/Inf ignored")
            return
        mode, q, dq, kp, kd, tau = fields.T
        self.commands += 1
        # Position targets only count where a position gain acts on them (a damping command has kp = 0).
        held = (mode > 0) & (kp > 0)
        lo, hi = self.joints.lower, self.joints.upper
        if np.any(held & ((q < lo) | (q > hi))):
            self.commands_outside_limits += 1
        if self.last_command_q is not None:
            both = held & self.last_held
            if both.any():
                step = float(np.abs(q - self.last_command_q)[both].max())
                self.max_command_step = max(self.max_command_step, step)
        self.last_command_q, self.last_held = q, held
        self.enabled = mode > 0
        self.q_des, self.dq_des, self.kp, self.kd, self.tau_ff = q, dq, kp, kd, tau

    def step(self, now: float) -> None:
        n = g1_scene.NUM_JOINTS
        q, dq = self.data.qpos[:n], self.data.qvel[:n]
        tau = self.kp * (self.q_des - q) + self.kd * (self.dq_des - dq) + self.tau_ff
        tau = np.where(self.enabled, tau, 0.0)
        self.data.ctrl[:n] = np.clip(tau, -self.joints.effort, self.joints.effort)
        self.mj.mj_step(self.model, self.data)
        if g1_scene.is_press(self.data.site_xpos[self.fingertip], self.button):
            self.presses += 1
            self.press_times.append(now)
            self.set_button(g1_scene.sample_button(self.rng, avoid=self.button))

    def lowstate(self) -> dict:
        n = g1_scene.NUM_JOINTS
        motors = [
            {"q": float(q), "dq": float(dq), "tau_est": float(t), "temperature": 30.0}
            for q, dq, t in zip(self.data.qpos[:n], self.data.qvel[:n], self.data.ctrl[:n], strict=True)
        ]
        motors += [{"q": 0.0, "dq": 0.0, "tau_est": 0.0, "temperature": 0.0}] * (NUM_MOTORS - n)
        return {
            "motor_state": motors,
            # Fixed base: level and still.
            "imu_state": {
                "quaternion": [1.0, 0.0, 0.0, 0.0],
                "gyroscope": [0.0, 0.0, 0.0],
                "accelerometer": [0.0, 0.0, 9.81],
                "rpy": [0.0, 0.0, 0.0],
                "temperature": 30.0,
            },
            "wireless_remote": "",
            "mode_machine": 0,
        }


def _camera_process(variant, size, fps, port, shared_qpos, shared_button, ready, stop) -> None:
    """Renders the head camera from the physics process's shared state and publishes it on `port`."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through `stop`
    import cv2
    import mujoco
    import zmq

    model = g1_scene.build_model(variant)
    data = mujoco.MjData(model)
    button = model.body("button").mocapid[0]
    renderer = mujoco.Renderer(model, size, size)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 20)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://*:{port}")
    period = 1.0 / fps
    try:
        while not stop.is_set():
            start = time.monotonic()
            with shared_qpos.get_lock():
                data.qpos[:] = np.frombuffer(shared_qpos.get_obj())
                data.mocap_pos[button] = np.frombuffer(shared_button.get_obj())
            mujoco.mj_forward(model, data)  # kinematics alone leaves the cameras and lights unplaced
            renderer.update_scene(data, camera=g1_scene.HEAD_CAMERA)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False  # update_scene resets the flags
            image = renderer.render()  # (size, size, 3) RGB
            # Same encoding as LeRobot's ImageServer (RGB bytes through cv2, decoded back as RGB).
            ok, jpeg = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), 90])
            message = {
                "timestamps": {g1_scene.HEAD_CAMERA: time.time()},
                "images": {g1_scene.HEAD_CAMERA: base64.b64encode(jpeg).decode("ascii")},
            }
            sock.send_string(json.dumps(message))
            ready.set()
            time.sleep(max(0.0, period - (time.monotonic() - start)))
    finally:
        sock.close(linger=0)
        ctx.term()
        renderer.close()


def run(args) -> None:
    import zmq

    sim = G1Sim(args.variant, seed=args.seed)
    nq = sim.model.nq
    ctx_mp = mp.get_context("spawn")  # a fresh process: its own GL context, no forked zmq state
    shared_qpos = ctx_mp.Array("d", nq)
    shared_button = ctx_mp.Array("d", 3)
    ready, stop = ctx_mp.Event(), ctx_mp.Event()

    def publish_scene() -> None:
        with shared_qpos.get_lock():
            np.frombuffer(shared_qpos.get_obj())[:] = sim.data.qpos
            np.frombuffer(shared_button.get_obj())[:] = sim.button

    publish_scene()
    camera = ctx_mp.Process(
        target=_camera_process,
        args=(args.variant, args.image_size, args.camera_fps, args.camera_port, shared_qpos, shared_button),
        kwargs={"ready": ready, "stop": stop},
        daemon=True,
    )
    camera.start()

    ctx = zmq.Context()
    lowcmd = ctx.socket(zmq.PULL)
    lowstate = ctx.socket(zmq.PUB)
    scene = ctx.socket(zmq.REP)
    for sock in (lowcmd, lowstate, scene):
        sock.setsockopt(zmq.LINGER, 0)
    lowcmd.bind(f"tcp://{args.host}:{args.lowcmd_port}")
    lowstate.bind(f"tcp://{args.host}:{args.lowstate_port}")
    scene.bind(f"tcp://{args.host}:{args.scene_port}")

    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not ready.wait(timeout=60):
        stop.set()
        raise RuntimeError("the camera process published no frame within 60 s (is MUJOCO_GL=egl available?)")
    print("READY", flush=True)

    dt = sim.model.opt.timestep
    t0 = time.monotonic()
    steps = 0
    first_command: float | None = None
    try:
        while not stopping:
            # Every command that arrived since the last physics step, in order: the newest one is what the
            # motors get (as with the robot's conflated socket), and the metrics see each one as sent.
            while True:
                try:
                    payload = lowcmd.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    sim.command(json.loads(payload)["data"]["motor_cmd"])
                    first_command = first_command or time.monotonic() - t0
                except (ValueError, KeyError, TypeError) as e:
                    logger.warning("bad lowcmd ignored: %s", e)
            try:
                request = json.loads(scene.recv(zmq.NOBLOCK))
                reply = _scene_request(sim, request, time.monotonic() - t0, first_command)
                if request.get("cmd") == "reset":
                    first_command = None
                scene.send_string(json.dumps(reply))
            except zmq.Again:
                pass
            except (ValueError, AttributeError) as e:
                scene.send_string(json.dumps({"error": str(e)}))

            # Real time: step until the simulated clock catches up (at most 20 steps per pass).
            target = int((time.monotonic() - t0) / dt)
            for _ in range(min(target - steps, 20)):
                sim.step(time.monotonic() - t0)
                steps += 1
                if steps % STATE_EVERY == 0:
                    message = {"topic": "rt/lowstate", "data": sim.lowstate()}
                    lowstate.send(json.dumps(message).encode(), zmq.NOBLOCK)
            if target - steps > 50:  # more than 0.1 s behind: drop it rather than fast-forward
                steps = target
            if steps % 10 == 0:
                publish_scene()
            time.sleep(max(0.0, t0 + (steps + 1) * dt - time.monotonic()))
    finally:
        stop.set()
        camera.join(timeout=3)
        if camera.is_alive():
            camera.kill()
        for sock in (lowcmd, lowstate, scene):
            sock.close(linger=0)
        ctx.term()
        print(f"bridge stopped: {sim.presses} presses, {sim.commands} commands", flush=True)


def _scene_request(sim: G1Sim, request: dict, now: float, first_command: float | None) -> dict:
    cmd = request.get("cmd")
    if cmd == "reset":
        sim.reset(request.get("seed"))
    elif cmd != "scene":
        raise ValueError(f"unknown scene request {cmd!r}; expected 'scene' or 'reset'")
    return {
        "button": sim.button.tolist(),
        "presses": sim.presses,
        "press_times": sim.press_times,
        "time": now,
        "first_command_time": first_command,
        "commands": sim.commands,
        "commands_outside_limits": sim.commands_outside_limits,
        "max_command_step": sim.max_command_step,
        "fingertip": sim.data.site_xpos[sim.fingertip].tolist(),
    }
