"""Configuration of `--robot.type=unitree_g1_dit4dit`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lerobot.cameras import CameraConfig
from lerobot.cameras.zmq.configuration_zmq import ZMQCameraConfig
from lerobot.robots.config import RobotConfig
from lerobot.robots.unitree_g1.config_unitree_g1 import UnitreeG1Config

MODES = ("arm", "full")


def default_head_camera(robot_ip: str = "127.0.0.1", size: int = 96) -> dict[str, CameraConfig]:
    """The head camera as `run_g1_server --camera` (or the simulator) serves it on port 5555."""
    return {
        "head_camera": ZMQCameraConfig(
            server_address=robot_ip, port=5555, camera_name="head_camera", width=size, height=size, fps=30
        )
    }


@RobotConfig.register_subclass("unitree_g1_dit4dit")
@dataclass
class UnitreeG1Dit4ditConfig(UnitreeG1Config):
    """LeRobot's `unitree_g1` config (gains, `control_dt`, cameras, ...) plus the fields below.

    The defaults drive the offline simulator (`dit4dit-g1-bridge`) on this machine; set
    `robot_ip` to the robot's address to drive a real G1 through LeRobot's `run_g1_server` on the robot.
    """

    # Address of the ZMQ bridge: LeRobot's `run_g1_server` on the robot, or the simulator.
    robot_ip: str = "127.0.0.1"
    # False: talk to the bridge over ZMQ (the real robot and our simulator). True would start LeRobot's
    # DDS MuJoCo simulation, which needs the Unitree SDK and the Hub, and is refused.
    is_simulation: bool = False
    # "arm": the 14 arm joints are the actions and the state; legs and waist stay at their connect pose.
    # "full": all 29 joints.
    mode: str = "arm"
    # Safety layer (inside send_action). Largest change of one joint's command per command (rad).
    max_step_rad: float = 0.1
    # Distance kept from the model's joint limits (rad).
    limit_margin_rad: float = 0.05
    # Commands are held when the newest robot state is older than this (s).
    max_state_age_s: float = 0.25
    # Receive timeout of the state socket and send timeout of the command socket (s): a dead bridge cannot
    # block a thread forever.
    receive_timeout_s: float = 0.5
    # How long connect() waits for the first robot state (s).
    connect_timeout_s: float = 10.0
    # Once the first action has been sent, the longest wait for the next one (s). Past it the robot keeps
    # its last safe command, logs why, and interrupts the process's main thread (as Ctrl-C does), so that a
    # control loop whose policy is gone ends and disconnects (damping) instead of waiting forever. LeRobot's
    # async robot client retries a dead policy server forever; set this there. None: no watchdog
    # (lerobot-record's reset phase legitimately sends no actions).
    action_timeout_s: float | None = None
    cameras: dict[str, CameraConfig] = field(default_factory=default_head_camera)

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"unitree_g1_dit4dit: mode={self.mode!r}; expected one of {MODES}")
        if self.is_simulation:
            raise ValueError(
                "unitree_g1_dit4dit: is_simulation=True starts LeRobot's DDS MuJoCo simulation (Unitree "
                "SDK and Hub download). Use is_simulation=false with "
                "`dit4dit-g1-bridge`, or with `run_g1_server` on a real G1."
            )
        if not (math.isfinite(self.max_step_rad) and 0 < self.max_step_rad <= 0.5):
            raise ValueError(
                f"unitree_g1_dit4dit: max_step_rad={self.max_step_rad}; expected in (0, 0.5] rad"
            )
        # A non-finite limit or timeout would switch its check off without saying so: refused by name.
        timeouts = ("max_state_age_s", "receive_timeout_s", "connect_timeout_s", "action_timeout_s")
        for name in ("limit_margin_rad", *timeouts):
            value = getattr(self, name)
            if value is None and name == "action_timeout_s":
                continue
            if not math.isfinite(value) or value < 0 or (name != "limit_margin_rad" and value == 0):
                raise ValueError(f"unitree_g1_dit4dit: {name}={value} must be a finite positive number")
        for name in ("kp", "kd"):
            if not all(math.isfinite(g) and g >= 0 for g in getattr(self, name)):
                raise ValueError(f"unitree_g1_dit4dit: every {name} gain must be finite and >= 0")
        if len(self.kp) != 29 or len(self.kd) != 29:
            raise ValueError(
                f"unitree_g1_dit4dit: kp and kd need 29 gains, got {len(self.kp)} and {len(self.kd)}"
            )
