"""The scripted button-press expert for the simulated G1, as a LeRobot `Teleoperator`.

Waypoints of the right fingertip solved by damped-least-squares IK: travel at hover height, descending on a
cone over the button as the fingertip closes in, so it presses; when the simulator counts a press the button
respawns, the fingertip is now away from it, so it lifts and the cycle starts again. Every action is a
function of the measured joints and the button position alone (no hidden phase or integrator), so that a
policy seeing the joints and the camera can learn it. Each action is the waypoint's joint configuration plus
the gravity torque there / kp (so the PD settles on it), not a step from the measured joints. Other joints are
held where they are.

With `behaviour="wander"` it moves the fingertip between random targets over the table instead (seeded by
`wander_seed`), and with probability `wander_press_prob` the next target is the button, pressed as above:
varied motion for action-free recordings. Those targets are hidden state, so wander actions are no
demonstrations.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from lerobot.robots.unitree_g1.config_unitree_g1 import _DEFAULT_KP
from lerobot.robots.unitree_g1.g1_utils import G1_29_JointArmIndex, G1_29_JointIndex
from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from .config_g1_scripted_expert import G1ScriptedExpertConfig

logger = logging.getLogger(__name__)

RIGHT_ARM = list(range(22, 29))
NUM_JOINTS = 29
# Where wander targets are drawn (world frame, m): the table top and a margin past the button region on every
# side, from 3 to 20 cm above the table (z is relative to the table top).
WANDER_X = (0.26, 0.50)
WANDER_Y = (-0.38, 0.02)
WANDER_Z = (0.03, 0.20)


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
        # wander: the current target ((3,) point, "button" or None), actions spent on it, presses before it.
        self._target: np.ndarray | str | None = None
        self._target_actions = 0
        self._target_presses = 0

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
        self._kp = np.asarray(_DEFAULT_KP, dtype=np.float64)  # the robot's PD gains (LeRobot's defaults)
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
        self._rng = np.random.default_rng(self.config.wander_seed)
        self._target = None

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
        button = np.asarray(scene["button"])
        if self.config.behaviour == "wander":
            self.command = self._wander(q, button, scene["presses"])
        else:
            self.command = self._step(q, button)
        return {f"{G1_29_JointIndex(i).name}.pos": float(self.command[i]) for i in self.joints}

    def _step(self, q: np.ndarray, button: np.ndarray) -> np.ndarray:
        """One action: (29,) measured joints, (3,) button -> (29,) joint command.

        The command is the waypoint's joint configuration, not a small step from the measured joints: where
        the fingertip is relative to the button picks the waypoint (lift in place after a press, else the
        point above the button on a cone from hover height down to the press depth), damped-least-squares IK
        solves for it to convergence, and the gravity torque at that configuration / kp is added so the PD
        settles on it. The robot's step cap turns the jump into a ramp. An absolute target barely depends on
        the measured joints, so a policy's small errors give small offsets; targets of the form "measured +
        step" integrate any bias (the first recipe's policies drifted up and hovered). A function of (q,
        button) only: no hidden phase or integrator."""
        tip = self._fingertip(q)
        cfg = self.config
        top = self._scene_geometry.TABLE_TOP_Z
        hover = top + cfg.hover_height_m
        dxy = np.linalg.norm(tip[:2] - button[:2])
        if dxy > cfg.descend_radius_m and tip[2] < hover - 0.02:  # low and away (after a press): lift first
            goal = np.array([tip[0], tip[1], hover])
        else:
            # A cone over the button: full depth within full_depth_radius_m, hover height from
            # descend_radius_m out, linear in between. A step between "hover" and "press" at one radius
            # made the target a discontinuous function of the fingertip's offset, which a policy regresses
            # to a half-descent.
            depth = np.clip(
                (cfg.descend_radius_m - dxy) / (cfg.descend_radius_m - cfg.full_depth_radius_m), 0, 1
            )
            goal = np.array([button[0], button[1], hover - depth * (hover - top - 0.02)])
        return self._command(q, goal)

    def _fingertip(self, q: np.ndarray) -> np.ndarray:
        """(3,) world position of the right fingertip at joints `q`."""
        self._data.qpos[:NUM_JOINTS] = q
        self._data.qvel[:] = 0.0
        self._mj.mj_kinematics(self._model, self._data)
        return self._data.site_xpos[self._tip].copy()

    def _command(self, q: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The (29,) joint command whose right arm puts the fingertip on `goal`: the IK solution plus the
        gravity torque there / kp, the other joints held at `q`, all within the joint limits less 0.06 rad."""
        mj, model, data = self._mj, self._model, self._data
        target = self._solve_ik(q, goal)
        data.qpos[:NUM_JOINTS] = target
        mj.mj_forward(model, data)  # qfrc_bias = the gravity torques at the target, at rest
        command = q.copy()  # joints other than the right arm hold where they are
        command[RIGHT_ARM] = target[RIGHT_ARM]
        command = command + data.qfrc_bias[:NUM_JOINTS] / self._kp
        lo, hi = model.jnt_range[:NUM_JOINTS, 0] + 0.06, model.jnt_range[:NUM_JOINTS, 1] - 0.06
        return np.clip(command, lo, hi)

    def _wander(self, q: np.ndarray, button: np.ndarray, presses: int) -> np.ndarray:
        """One wander action: (29,) measured joints, (3,) button, the simulator's press count -> command.

        The current target is kept until it is reached (a random point: within `wander_reach_m`; the button:
        a press is counted) or `wander_max_actions` actions were spent on it; then the next is drawn, the
        button with probability `wander_press_prob`, else a uniform point of WANDER_X x WANDER_Y x WANDER_Z.
        Moving to a point lifts first when the fingertip is low and far from it, as a press cycle does."""
        cfg = self.config
        self._target_actions += 1
        done = False
        if isinstance(self._target, str):
            done = presses > self._target_presses
        elif self._target is not None:
            done = np.linalg.norm(self._fingertip(q) - self._target) < cfg.wander_reach_m
        if self._target is None or done or self._target_actions > cfg.wander_max_actions:
            self._target_actions, self._target_presses = 0, presses
            if self._rng.random() < cfg.wander_press_prob:
                self._target = "button"
            else:
                height = self._scene_geometry.TABLE_TOP_Z + self._rng.uniform(*WANDER_Z)
                self._target = np.array([self._rng.uniform(*WANDER_X), self._rng.uniform(*WANDER_Y), height])
        if isinstance(self._target, str):
            return self._step(q, button)
        tip = self._fingertip(q)
        hover = self._scene_geometry.TABLE_TOP_Z + cfg.hover_height_m
        goal = self._target
        if np.linalg.norm(tip[:2] - goal[:2]) > cfg.descend_radius_m and tip[2] < hover - 0.02:
            goal = np.array([tip[0], tip[1], hover])
        return self._command(q, goal)

    def _solve_ik(self, q: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Right-arm joints that put the fingertip on `goal`, by damped least squares from `q` (within the
        joint limits; the redundant joints are pulled towards a relaxed wrist)."""
        mj, model, data = self._mj, self._model, self._data
        lo, hi = model.jnt_range[RIGHT_ARM, 0] + 0.06, model.jnt_range[RIGHT_ARM, 1] - 0.06
        sol = q.copy()
        jac = np.zeros((3, model.nv))
        for _ in range(self.config.ik_iterations):
            data.qpos[:NUM_JOINTS] = sol
            mj.mj_kinematics(model, data)
            mj.mj_comPos(model, data)
            err = goal - data.site_xpos[self._tip]
            if np.linalg.norm(err) < self.config.ik_tolerance_m:
                break
            mj.mj_jacSite(model, data, jac, None, self._tip)
            j = jac[:, RIGHT_ARM]
            pinv = j.T @ np.linalg.inv(j @ j.T + 1e-3 * np.eye(3))
            dq = pinv @ err + (np.eye(len(RIGHT_ARM)) - pinv @ j) @ (0.05 * (0.0 - sol[RIGHT_ARM]))
            sol[RIGHT_ARM] = np.clip(sol[RIGHT_ARM] + np.clip(dq, -0.2, 0.2), lo, hi)
        return sol

    def send_feedback(self, feedback: dict) -> None:
        pass

    def disconnect(self) -> None:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected")
        self._sub.close(linger=0)
        self._sub = None
        self.scene.close()
        self._ctx.term()
