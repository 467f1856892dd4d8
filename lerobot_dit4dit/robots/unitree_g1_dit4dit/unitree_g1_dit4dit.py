"""`unitree_g1_dit4dit`: LeRobot's `UnitreeG1` over the ZMQ bridge, with `.pos` joints, an arm-only mode,
receive timeouts and a safety layer in `send_action`.

Why a subclass rather than the stock `unitree_g1`:
- `lerobot-rollout` keeps only float features ending in `.pos`/`.vel`; the stock robot names its joints
  `<Joint>.q`, so rollout gets an empty state and sends nothing. Here they are `<Joint>.pos`, and
  `send_action` also accepts `.q` for teleoperators that speak the stock names.
- The stock constructor requires the Unitree SDK even on the ZMQ path, where the client only needs the
  LowCmd container and a CRC (LeRobot's `run_g1_server` recomputes the CRC on the robot). Without the SDK
  we use plain Python stand-ins below.
- The stock state thread blocks in `recv()` with no timeout: a process whose bridge died never exits.

Joints are indexed by LeRobot's `G1_29_JointIndex` (legs 0-11, waist 12-14, left arm 15-21, right arm
22-28), which is also the hinge order of the G1 MJCF and of the wire protocol.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from functools import cached_property

import numpy as np
from lerobot.robots.robot import Robot
from lerobot.robots.unitree_g1.g1_utils import G1_29_JointArmIndex, G1_29_JointIndex
from lerobot.robots.unitree_g1.unitree_g1 import UnitreeG1
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError
from lerobot.utils.import_utils import _unitree_sdk_available

from .config_unitree_g1_dit4dit import UnitreeG1Dit4ditConfig
from .safety import G1_JOINT_LIMITS, JointSafetyFilter

logger = logging.getLogger(__name__)

NUM_JOINTS = 29
NUM_MOTORS = 35  # the LowCmd/LowState messages carry 35 motor slots; the G1 uses the first 29
LOWCMD_TOPIC = "rt/lowcmd"  # the topic `run_g1_server` forwards to DDS
LOWSTATE_TOPIC = "rt/lowstate"
ARM_JOINTS = tuple(int(j) for j in G1_29_JointArmIndex)
# Commands the lowcmd socket holds while the robot is slow to take them; past that send_action waits up to
# receive_timeout_s, then raises. A longer queue would deliver old targets late.
LOWCMD_QUEUE = 4


class _MotorCmd:
    """Stand-in for one `unitree_hg` MotorCmd_ (no __slots__: LeRobot's publish_lowcmd also sets `.qd`)."""

    def __init__(self):
        self.mode, self.q, self.dq, self.kp, self.kd, self.tau = 0, 0.0, 0.0, 0.0, 0.0, 0.0


class _LowCmd:
    """Stand-in for `unitree_hg_msg_dds__LowCmd_()`: the fields `lowcmd_to_dict` serialises."""

    def __init__(self):
        self.mode_pr = 0
        self.mode_machine = 0
        self.motor_cmd = [_MotorCmd() for _ in range(NUM_MOTORS)]
        self.crc = 0


class _BridgeCRC:
    """Stand-in for the SDK's CRC: on the ZMQ path `run_g1_server` recomputes the CRC before DDS."""

    def Crc(self, msg) -> int:  # noqa: N802 (the SDK's method name)
        return 0


def _lowcmd_container():
    """The SDK's LowCmd and CRC when `unitree_sdk2py` is installed, else the stand-ins."""
    if _unitree_sdk_available:
        from unitree_sdk2py.idl.default import unitree_hg_msg_dds__LowCmd_
        from unitree_sdk2py.utils.crc import CRC

        return unitree_hg_msg_dds__LowCmd_(), CRC()
    return _LowCmd(), _BridgeCRC()


class UnitreeG1Dit4dit(UnitreeG1):
    config_class = UnitreeG1Dit4ditConfig
    name = "unitree_g1_dit4dit"

    def __init__(self, config: UnitreeG1Dit4ditConfig):
        if config.controller is not None or config.gravity_compensation:
            raise ValueError(
                "unitree_g1_dit4dit: `controller` and `gravity_compensation` are not supported (legs are "
                "held at their connect pose); use --robot.type=unitree_g1 for its locomotion controllers."
            )
        # The stock constructor requires the Unitree SDK even on the ZMQ path; we set the same attributes it
        # sets (tests/test_g1.py::test_g1_stock_internals keeps the two in step) without that check.
        Robot.__init__(self, config)
        from lerobot.cameras import make_cameras_from_configs

        self.config = config
        self.control_dt = config.control_dt
        self._cameras = make_cameras_from_configs(config.cameras)
        self._ChannelFactoryInitialize = self._ChannelPublisher = self._ChannelSubscriber = None
        self.sim_env = self._env_wrapper = None
        self._lowstate = None
        self._lowstate_lock = threading.Lock()
        self._shutdown_event = threading.Event()
        self.subscribe_thread = None
        self.arm_ik = None
        self.controller = None
        self._controller_thread = None
        self._controller_action_lock = threading.Lock()
        self.controller_input, self.controller_output = {}, {}

        self.joints = ARM_JOINTS if config.mode == "arm" else tuple(range(NUM_JOINTS))
        names = [G1_29_JointIndex(i).name for i in range(NUM_JOINTS)]
        self._key_index = {f"{n}.{suffix}": i for i, n in enumerate(names) for suffix in ("pos", "q")}
        self._q = self._dq = None
        self._state_time = float("-inf")
        self._sockets = None
        self.safety: JointSafetyFilter | None = None
        self.commands_sent = 0
        self._warned_keys: set[str] = set()
        self._last_action_time: float | None = None
        self.action_timed_out = False  # set by the action watchdog (`config.action_timeout_s`)

    # ------------------------------------------------------------------ features
    @property
    def _motors_ft(self) -> dict[str, type]:
        return {f"{G1_29_JointIndex(i).name}.pos": float for i in self.joints}

    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        return {**self._motors_ft, **self._cameras_ft}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return self._motors_ft

    @property
    def is_connected(self) -> bool:
        return self.safety is not None

    # ------------------------------------------------------------------ connection
    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        import zmq
        from lerobot.robots.unitree_g1 import unitree_sdk2_socket as sockets

        sockets.ChannelFactoryInitialize(0, config=self.config)
        self._sockets = sockets
        # LeRobot's lowcmd socket conflates: an unsent command is replaced by the next one. Under load a
        # dropped command made the simulator's target jump by 0.115 rad (cap 0.1) between the commands it
        # received, so the step cap held only for what was sent. This socket keeps every command, in order,
        # and raises instead of blocking when the robot stops taking them (send timeout).
        sockets._lowcmd_sock.close(linger=0)
        lowcmd = sockets._ctx.socket(zmq.PUSH)
        for opt, value in (
            (zmq.LINGER, 0),
            (zmq.SNDHWM, LOWCMD_QUEUE),
            (zmq.SNDTIMEO, int(self.config.receive_timeout_s * 1000)),
        ):
            lowcmd.setsockopt(opt, value)
        lowcmd.connect(f"tcp://{self.config.robot_ip}:{sockets.LOWCMD_PORT}")
        sockets._lowcmd_sock = lowcmd
        self._send_timeout = zmq.Again  # zmq is imported here, not at module import (plugin discovery)
        sockets._lowstate_sock.setsockopt(zmq.LINGER, 0)  # never block process exit
        sockets._lowstate_sock.setsockopt(zmq.RCVTIMEO, int(self.config.receive_timeout_s * 1000))
        self.lowcmd_publisher = sockets.ChannelPublisher(LOWCMD_TOPIC, None)
        self.lowstate_subscriber = sockets.ChannelSubscriber(LOWSTATE_TOPIC, None)
        self._shutdown_event.clear()
        self.subscribe_thread = threading.Thread(target=self._subscribe_lowstate, daemon=True)
        self.subscribe_thread.start()
        try:
            self._wait_for_state()
            for cam in self._cameras.values():
                if not cam.is_connected:
                    cam.connect()
        except BaseException:
            self._close()
            raise

        self.msg, self.crc = _lowcmd_container()
        self.msg.mode_pr = 0
        with self._lowstate_lock:
            q = self._q.copy()
            self.msg.mode_machine = self._lowstate.mode_machine
        self.kp = np.asarray(self.config.kp, dtype=np.float32)
        self.kd = np.asarray(self.config.kd, dtype=np.float32)
        for i in range(NUM_JOINTS):
            cmd = self.msg.motor_cmd[i]
            cmd.mode, cmd.q, cmd.kp, cmd.kd = 1, float(q[i]), float(self.kp[i]), float(self.kd[i])
        limits = np.array(list(G1_JOINT_LIMITS.values()))
        locked = np.ones(NUM_JOINTS, dtype=bool)
        locked[list(self.joints)] = False
        self.safety = JointSafetyFilter(
            limits[:, 0],
            limits[:, 1],
            margin=self.config.limit_margin_rad,
            max_step=self.config.max_step_rad,
            max_state_age_s=self.config.max_state_age_s,
            locked=locked,
            start=q,
        )
        self._last_action_time, self.action_timed_out = None, False
        if self.config.action_timeout_s is not None:
            _let_sigint_interrupt()
            threading.Thread(target=self._watch_actions, daemon=True, name="action watchdog").start()
        logger.info("%s connected to %s (mode=%s)", self, self.config.robot_ip, self.config.mode)

    def _watch_actions(self) -> None:
        """Action watchdog: once actions have started, a gap above `action_timeout_s` ends the control loop.

        The loop that drives the robot may not be ours and may never give up (LeRobot's async robot client
        logs a dead policy server's errors and retries forever: `robot_client.py`, `receive_actions` and
        `send_observation`), so the robot ends it as Ctrl-C does: SIGINT to the main thread, which every
        LeRobot CLI handles by disconnecting the robot (damping). Until then the robot keeps its last safe
        command."""
        timeout = self.config.action_timeout_s
        while not self._shutdown_event.wait(min(timeout / 4, 0.1)):
            last = self._last_action_time
            if last is not None and time.monotonic() - last > timeout:
                self.action_timed_out = True
                logger.error(
                    "unitree_g1_dit4dit: no action for %.1f s (action_timeout_s=%s): the policy or its "
                    "server stopped answering. The robot holds its last command; stopping the control loop.",
                    time.monotonic() - last,
                    timeout,
                )
                # A real SIGINT to the main thread, not `_thread.interrupt_main`: the signal also wakes a main
                # thread that is asleep or blocked in a system call.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return

    def _wait_for_state(self) -> None:
        deadline = time.monotonic() + self.config.connect_timeout_s
        while self._q is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"unitree_g1_dit4dit: no robot state from tcp://{self.config.robot_ip}:6001 within "
                    f"{self.config.connect_timeout_s} s. Is the bridge running (`run_g1_server` on the "
                    "robot, or `dit4dit-g1-bridge`)?"
                )
            time.sleep(0.01)

    def _subscribe_lowstate(self) -> None:
        """State thread: like the stock one, but a receive timeout lets it notice shutdown."""
        import zmq

        start = time.monotonic()
        while not self._shutdown_event.is_set():
            try:
                msg = self.lowstate_subscriber.Read()
            except zmq.Again:  # receive timeout: check for shutdown, say how long the bridge has been silent
                last = self._state_time if self._state_time > float("-inf") else start
                logger.warning("unitree_g1_dit4dit: no robot state for %.1f s", time.monotonic() - last)
                continue
            except zmq.ZMQError:  # socket closed by disconnect()
                break
            if len(msg.motor_state) < NUM_JOINTS:
                logger.warning("unitree_g1_dit4dit: state with %d motors ignored", len(msg.motor_state))
                continue
            q = np.array([msg.motor_state[i].q for i in range(NUM_JOINTS)], dtype=np.float64)
            dq = np.array([msg.motor_state[i].dq for i in range(NUM_JOINTS)], dtype=np.float64)
            if not (np.isfinite(q).all() and np.isfinite(dq).all()):
                logger.warning("unitree_g1_dit4dit: state with NaN/Inf joint values ignored")
                continue
            with self._lowstate_lock:
                self._lowstate, self._q, self._dq = msg, q, dq
                self._state_time = time.monotonic()

    def state_age_s(self) -> float:
        with self._lowstate_lock:
            return time.monotonic() - self._state_time

    def disconnect(self) -> None:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        try:
            # Damping mode: no position gain, the stock damping; joints come to rest slowly under gravity
            # instead of the stock zero-torque drop.
            with self._lowstate_lock:
                q = self._q.copy()
            self.publish_lowcmd(
                {f"{G1_29_JointIndex(i).name}.q": float(q[i]) for i in range(NUM_JOINTS)},
                kp=np.zeros(NUM_JOINTS, dtype=np.float32),
                kd=self.kd,
                tau=np.zeros(NUM_JOINTS, dtype=np.float32),
            )
            time.sleep(0.05)  # let the last command leave before the socket closes (LINGER is 0)
        except Exception as e:  # a dead bridge must not stop the rest of the shutdown
            logger.warning("unitree_g1_dit4dit: could not send the damping command on disconnect: %s", e)
        finally:
            self._close()
            self.safety = None

    def _close(self) -> None:
        self._shutdown_event.set()
        if self.subscribe_thread is not None:
            self.subscribe_thread.join(timeout=2 * self.config.receive_timeout_s + 1)
            self.subscribe_thread = None
        sockets = self._sockets
        if sockets is not None:
            for attr in ("_lowcmd_sock", "_lowstate_sock"):
                sock = getattr(sockets, attr)
                if sock is not None:
                    sock.close(linger=0)
                    setattr(sockets, attr, None)
            self._sockets = None
        for cam in self._cameras.values():
            if cam.is_connected:
                cam.disconnect()
        with self._lowstate_lock:
            self._q = self._dq = self._lowstate = None

    # ------------------------------------------------------------------ I/O
    def get_observation(self) -> dict:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        with self._lowstate_lock:
            q, age = self._q, time.monotonic() - self._state_time
        if q is None or age > self.config.connect_timeout_s:
            # Stop the CLI loop rather than run a policy on a frozen state forever.
            raise ConnectionError(
                f"unitree_g1_dit4dit: no robot state for {age:.1f} s (limit connect_timeout_s="
                f"{self.config.connect_timeout_s}): the bridge at {self.config.robot_ip} is gone."
            )
        obs = {f"{G1_29_JointIndex(i).name}.pos": float(q[i]) for i in self.joints}
        for name, cam in self._cameras.items():
            obs[name] = cam.read_latest()
        return obs

    def send_action(self, action: dict) -> dict:
        """Joint targets {"<Joint>.pos" or "<Joint>.q": rad} -> the safe command that was sent, as `.pos`.

        Missing joints, NaN/Inf and non-numbers hold the joint's last command; unknown keys are ignored (and
        logged once); locked joints keep their connect pose; see `safety.py` for the rest."""
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        target = np.full(NUM_JOINTS, np.nan)
        for key, value in action.items():
            index = self._key_index.get(key)
            if index is None:
                if key not in self._warned_keys:
                    self._warned_keys.add(key)
                    logger.warning("unitree_g1_dit4dit: ignoring unknown action key %r", key)
                continue
            with contextlib.suppress(TypeError, ValueError):  # else NaN: held and counted by the safety layer
                target[index] = float(value)
        safe = self.safety(target, self.state_age_s())
        try:
            self.publish_lowcmd({f"{G1_29_JointIndex(i).name}.q": float(safe[i]) for i in range(NUM_JOINTS)})
        except self._send_timeout as e:
            raise ConnectionError(
                f"unitree_g1_dit4dit: the robot at {self.config.robot_ip}:{self._sockets.LOWCMD_PORT} took "
                f"no command for {self.config.receive_timeout_s} s ({LOWCMD_QUEUE} queued)."
            ) from e
        self.commands_sent += 1
        self._last_action_time = time.monotonic()
        return {f"{G1_29_JointIndex(i).name}.pos": float(safe[i]) for i in self.joints}

    def reset(self, control_dt: float | None = None, default_positions: list[float] | None = None) -> None:
        raise NotImplementedError(
            "unitree_g1_dit4dit does not move to a default pose on its own; send targets with send_action "
            "(capped at max_step_rad per command)."
        )


def _let_sigint_interrupt() -> None:
    """Give SIGINT back its Python handler where the process ignores it, so the action watchdog can end the
    control loop. A shell starts a background job (`lerobot-rollout ... &` in a script) with SIGINT ignored,
    and Python keeps an inherited SIG_IGN: the watchdog's SIGINT would then be dropped and the loop would run
    on, holding the last command, forever. A handler someone installed on purpose is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there; LeRobot's CLIs connect from the main thread
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        logger.warning(
            "unitree_g1_dit4dit: SIGINT was ignored in this process (started in the background by a shell?); "
            "restoring Python's handler so that the action watchdog can stop the control loop."
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
