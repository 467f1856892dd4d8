"""The joint-command safety layer of `unitree_g1_dit4dit`: what no policy or teleoperator output can pass.

It runs inside `send_action`, after the key mapping and before the wire, because it must hold for every
policy and teleoperator: LeRobot's record and rollout CLIs take no user processors on the robot side.
Per command, per joint, in this order:

1. a locked joint gets its connect-time position;
2. NaN/Inf or a missing value holds the joint's last safe command (counted);
3. the target is clipped into the model's position range, shrunk by a margin;
4. the change from the last safe command is clipped to `max_step` radians;
5. when the robot state is older than `max_state_age_s`, the whole command holds (counted).

So every command on the wire is finite, inside the limits, and within `max_step` of the previous one.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

# Joint position limits (rad) of the 29-DoF G1, in G1_29_JointIndex order: the hinge ranges of
# Unitree's G1 MJCF (lerobot_dit4dit/sim/assets/g1_capsules.xml; a test keeps them equal).
G1_JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "kLeftHipPitch": (-2.5307, 2.8798),
    "kLeftHipRoll": (-0.5236, 2.9671),
    "kLeftHipYaw": (-2.7576, 2.7576),
    "kLeftKnee": (-0.087267, 2.8798),
    "kLeftAnklePitch": (-0.87267, 0.5236),
    "kLeftAnkleRoll": (-0.2618, 0.2618),
    "kRightHipPitch": (-2.5307, 2.8798),
    "kRightHipRoll": (-2.9671, 0.5236),
    "kRightHipYaw": (-2.7576, 2.7576),
    "kRightKnee": (-0.087267, 2.8798),
    "kRightAnklePitch": (-0.87267, 0.5236),
    "kRightAnkleRoll": (-0.2618, 0.2618),
    "kWaistYaw": (-2.618, 2.618),
    "kWaistRoll": (-0.52, 0.52),
    "kWaistPitch": (-0.52, 0.52),
    "kLeftShoulderPitch": (-3.0892, 2.6704),
    "kLeftShoulderRoll": (-1.5882, 2.2515),
    "kLeftShoulderYaw": (-2.618, 2.618),
    "kLeftElbow": (-1.0472, 2.0944),
    "kLeftWristRoll": (-1.97222, 1.97222),
    "kLeftWristPitch": (-1.61443, 1.61443),
    "kLeftWristYaw": (-1.61443, 1.61443),
    "kRightShoulderPitch": (-3.0892, 2.6704),
    "kRightShoulderRoll": (-2.2515, 1.5882),
    "kRightShoulderYaw": (-2.618, 2.618),
    "kRightElbow": (-1.0472, 2.0944),
    "kRightWristRoll": (-1.97222, 1.97222),
    "kRightWristPitch": (-1.61443, 1.61443),
    "kRightWristYaw": (-1.61443, 1.61443),
}


class JointSafetyFilter:
    """Turns requested joint targets (29,) into safe ones; see the module docstring for the rules.

    Args:
        lower, upper: (29,) position limits (rad); the safe range is [lower + margin, upper - margin].
        margin: distance (rad) kept from each limit.
        max_step: largest change (rad) of a joint's command from one command to the next.
        max_state_age_s: a command is held when the robot state is older than this.
        locked: (29,) bool, joints that never move from their connect-time position.
        start: (29,) connect-time positions; the first "last safe command". Clipped into the safe range
            only by the step cap, so a robot that starts outside it is walked back at `max_step` a command.
    """

    def __init__(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        margin: float,
        max_step: float,
        max_state_age_s: float,
        locked: np.ndarray,
        start: np.ndarray,
    ):
        lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        if not (lower.shape == upper.shape == locked.shape == start.shape):
            raise ValueError(
                f"safety filter shapes differ: lower {lower.shape}, upper {upper.shape}, "
                f"locked {locked.shape}, start {start.shape}"
            )
        if not math.isfinite(max_step) or max_step <= 0:
            raise ValueError(f"max_step must be a positive number of radians, got {max_step}")
        if margin < 0 or np.any(upper - lower <= 2 * margin):
            raise ValueError(f"limit margin {margin} rad leaves an empty range for some joint")
        if not np.all(np.isfinite(start)):
            raise ValueError(f"connect-time joint positions hold NaN/Inf: {start.tolist()}")
        self.lo = lower + margin
        self.hi = upper - margin
        self.max_step = float(max_step)
        self.max_state_age_s = float(max_state_age_s)
        self.locked = locked.astype(bool)
        self.hold = start.astype(np.float64).copy()
        self.last = self.hold.copy()
        self.non_finite = 0  # joint values replaced because they were NaN/Inf/missing
        self.bad_commands = 0  # commands with at least one such value
        self.stale_holds = 0  # whole commands held because the state was too old
        self.clipped = 0  # joint values moved by the range or step clip

    def __call__(self, target: np.ndarray, state_age_s: float) -> np.ndarray:
        """(29,) requested targets (NaN where a joint was not given) -> (29,) safe targets."""
        if not state_age_s <= self.max_state_age_s:  # also true for NaN ages
            self.stale_holds += 1
            if self.stale_holds == 1 or self.stale_holds % 100 == 0:
                logger.warning(
                    "unitree_g1_dit4dit: robot state is %.3f s old (limit %.3f s): holding the last command "
                    "(%d holds so far)",
                    state_age_s,
                    self.max_state_age_s,
                    self.stale_holds,
                )
            return self.last.copy()
        target = np.asarray(target, dtype=np.float64).copy()
        target[self.locked] = self.hold[self.locked]
        bad = ~np.isfinite(target)
        if bad.any():
            self.non_finite += int(bad.sum())
            self.bad_commands += 1
            if self.bad_commands == 1 or self.bad_commands % 100 == 0:  # counted always, logged sparsely
                logger.warning(
                    "unitree_g1_dit4dit: NaN/Inf or missing target for joints %s: holding their last command "
                    "(%d such values in %d commands so far)",
                    np.flatnonzero(bad).tolist(),
                    self.non_finite,
                    self.bad_commands,
                )
            target[bad] = self.last[bad]
        safe = np.clip(target, self.lo, self.hi)
        safe = np.clip(safe, self.last - self.max_step, self.last + self.max_step)
        self.clipped += int(np.count_nonzero(np.abs(safe - target) > 1e-12))
        self.last = safe
        return safe.copy()
