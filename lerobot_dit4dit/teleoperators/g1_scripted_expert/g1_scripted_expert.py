"""The scripted button-press expert for the simulated G1, as a LeRobot `Teleoperator`.

Closed-loop damped-least-squares IK of the right fingertip: lift, hover above the button, press; when the
simulator counts a press the button respawns and the cycle starts again. Targets are integrated on the
commanded joints (not the measured ones), which removes the steady-state sag of the PD under gravity.
The left arm and, in full mode, the legs and waist keep their first measured position.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from lerobot.robots.unitree_g1.g1_utils import G1_29_JointArmIndex, G1_29_JointIndex
from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from .config_g1_scripted_expert import G1ScriptedExpertConfig

logger = logging.getLogger(__name__)

RIGHT_ARM = list(range(22, 29))
NUM_JOINTS = 29


class G1ScriptedExpert(Teleoperator):
    config_class = G1ScriptedExpertConfig
    name = "g1_scripted_expert"

    def __init__(self, config: G1ScriptedExpertConfig):
        super().__init__(config)
        self.config = config
        joints = [int(j) for j in G1_29_JointArmIndex] if config.mode == "arm" else list(range(NUM_JOINTS))
        self.joints = joints
        self._sub = self._ctx = self.scene = None
        self._model = self._data = None
        self.command: np.ndarray | None = None
        self.phase = "lift"
        self.presses = None

    @property
    def action_features(self) -> dict[str, type]:
        return {f"{G1_29_JointIndex(i).name}.pos": float for i in self.joints}

    @property
    def feedback_features(self) -> dict:
        return {}

    @property
    def is_connected(self) -> bool:
        return self._sub is not None

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        import mujoco
        import zmq

        from lerobot_dit4dit.sim import g1_scene
        from lerobot_dit4dit.sim.scene_client import SceneClient

        self._mj = mujoco
        self._model = g1_scene.build_model("capsules")  # kinematics only; same tree as the meshes variant
        self._data = mujoco.MjData(self._model)
        self._tip = self._model.site(g1_scene.FINGERTIP_SITE).id
        self._scene_geometry = g1_scene
        self._ctx = zmq.Context()
        sub = self._ctx.socket(zmq.SUB)
        for opt, value in (
            (zmq.CONFLATE, 1),
            (zmq.LINGER, 0),
            (zmq.RCVTIMEO, int(self.config.timeout_s * 1000)),
        ):
            sub.setsockopt(opt, value)
        sub.setsockopt_string(zmq.SUBSCRIBE, "")
        sub.connect(f"tcp://{self.config.host}:{self.config.lowstate_port}")
        self._sub = sub
        self.scene = SceneClient(self.config.host, self.config.scene_port, self.config.timeout_s)
        self.command = None
        self.phase = "lift"
        self.presses = None

    def _joint_state(self) -> np.ndarray:
        import zmq

        try:
            payload = self._sub.recv()
        except zmq.Again as e:
            raise TimeoutError(
                f"g1_scripted_expert: no robot state from {self.config.host}:{self.config.lowstate_port} "
                f"within {self.config.timeout_s} s"
            ) from e
        motors = json.loads(payload)["data"]["motor_state"]
        return np.array([m["q"] for m in motors[:NUM_JOINTS]], dtype=np.float64)

    def get_action(self) -> dict[str, float]:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        q = self._joint_state()
        scene = self.scene.scene()
        if self.command is None:
            self.command = q.copy()
        button = np.asarray(scene["button"])
        if self.presses is not None and scene["presses"] != self.presses:
            self.phase = "lift"
        self.presses = scene["presses"]
        self.command = self._step(q, button)
        return {f"{G1_29_JointIndex(i).name}.pos": float(self.command[i]) for i in self.joints}

    def _step(self, q: np.ndarray, button: np.ndarray) -> np.ndarray:
        """One IK step: (29,) measured joints, (3,) button -> (29,) new joint command."""
        mj, model, data, g = self._mj, self._model, self._data, self._scene_geometry
        data.qpos[:NUM_JOINTS] = q
        mj.mj_kinematics(model, data)
        mj.mj_comPos(model, data)
        tip = data.site_xpos[self._tip].copy()
        top = g.TABLE_TOP_Z
        hover = top + self.config.hover_height_m
        if self.phase == "lift":
            goal = np.array([tip[0], tip[1], hover])
            if tip[2] > hover - 0.02:
                self.phase = "hover"
        if self.phase == "hover":
            goal = np.array([button[0], button[1], hover])
            if np.linalg.norm(tip[:2] - button[:2]) < 0.015:
                self.phase = "press"
        if self.phase == "press":
            goal = np.array([button[0], button[1], top + 0.02])
        err = goal - tip
        norm = np.linalg.norm(err)
        if norm > self.config.max_tip_step_m:
            err *= self.config.max_tip_step_m / norm
        jac = np.zeros((3, model.nv))
        mj.mj_jacSite(model, data, jac, None, self._tip)
        jac = jac[:, RIGHT_ARM]
        pinv = jac.T @ np.linalg.inv(jac @ jac.T + 1e-3 * np.eye(3))
        dq = pinv @ err
        # Null space: drift towards a relaxed wrist so the redundant joints do not wander.
        dq += (np.eye(len(RIGHT_ARM)) - pinv @ jac) @ (0.05 * (0.0 - q[RIGHT_ARM]))
        dq = np.clip(dq, -self.config.max_joint_step_rad, self.config.max_joint_step_rad)
        command = self.command.copy()
        arm = command[RIGHT_ARM] + dq
        # Integrate on the command, but never more than 0.3 rad from the measured joints (no wind-up).
        arm = np.clip(arm, q[RIGHT_ARM] - 0.3, q[RIGHT_ARM] + 0.3)
        arm = np.clip(arm, model.jnt_range[RIGHT_ARM, 0] + 0.06, model.jnt_range[RIGHT_ARM, 1] - 0.06)
        step = np.clip(
            arm - command[RIGHT_ARM], -self.config.max_joint_step_rad, self.config.max_joint_step_rad
        )
        command[RIGHT_ARM] += step
        return command

    def send_feedback(self, feedback: dict) -> None:
        pass

    def disconnect(self) -> None:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        self._sub.close(linger=0)
        self._sub = None
        self.scene.close()
        self._ctx.term()
