"""Configuration of `--teleop.type=g1_scripted_expert`."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.teleoperators.config import TeleoperatorConfig


@TeleoperatorConfig.register_subclass("g1_scripted_expert")
@dataclass
class G1ScriptedExpertConfig(TeleoperatorConfig):
    """The scripted expert of the simulated G1 (`dit4dit-g1-bridge`).

    It reads the joint state from the bridge (port 6001) and the button position from the simulator's scene
    channel (port 6002), and returns joint targets in the robot's `.pos` action space.
    """

    # Address of the simulator.
    host: str = "127.0.0.1"
    lowstate_port: int = 6001
    scene_port: int = 6002
    # "arm" (14 arm joints) or "full" (29): must match --robot.mode.
    mode: str = "arm"
    # Damped-least-squares iterations per action for the waypoint's joints, and the fingertip tolerance (m)
    # that ends them early. The robot's step cap (0.1 rad per command) sets how fast the arm gets there.
    ik_iterations: int = 50
    ik_tolerance_m: float = 0.002
    # Height above the table top of the hover point (m) before pressing.
    hover_height_m: float = 0.07
    # The descent: at hover height from this horizontal distance to the button's centre (m) inwards, down to
    # the press depth within full_depth_radius_m, linearly in between. The simulator counts a press within
    # g1_scene.PRESS_RADIUS (0.04 m) of the centre, so a fingertip a few cm off still comes down far enough.
    descend_radius_m: float = 0.05
    full_depth_radius_m: float = 0.02
    # Receive/reply timeout towards the simulator (s).
    timeout_s: float = 2.0
    # What the expert does. "press" (the default): press the button, cycle after cycle; these are the
    # demonstrations. "wander": move the fingertip between random targets over the table and now and then
    # press the button, for action-free recordings (video pretraining, benchmarks/g1_video_first.py) that
    # show the arm moving about and the button in many places, not only the demonstrations' motion. A wander
    # target is a random draw the observation does not show, so these actions are no demonstrations: the
    # study drops them (and observation.state) with lerobot-edit-dataset.
    behaviour: str = "press"
    # wander: the seed of the target draws (fixed, so a recording can be made again), the chance that the
    # next target is the button (pursued until the simulator counts a press), the fingertip distance (m) at
    # which a random target counts as reached, and the most actions spent on one target (45: 3 s at 15 fps).
    wander_seed: int = 0
    wander_press_prob: float = 0.3
    wander_reach_m: float = 0.02
    wander_max_actions: int = 45

    def __post_init__(self):
        if self.mode not in ("arm", "full"):
            raise ValueError(f"g1_scripted_expert: mode={self.mode!r}; expected 'arm' or 'full'")
        if self.behaviour not in ("press", "wander"):
            raise ValueError(
                f"g1_scripted_expert: behaviour={self.behaviour!r}; expected 'press' or 'wander'"
            )
        if not 0.0 <= self.wander_press_prob <= 1.0:
            raise ValueError(
                f"g1_scripted_expert: wander_press_prob={self.wander_press_prob} must be in [0, 1]"
            )
        for name in (
            "ik_iterations",
            "ik_tolerance_m",
            "hover_height_m",
            "descend_radius_m",
            "full_depth_radius_m",
            "timeout_s",
            "wander_reach_m",
            "wander_max_actions",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"g1_scripted_expert: {name}={getattr(self, name)} must be positive")
        if not self.full_depth_radius_m < self.descend_radius_m:
            raise ValueError(
                f"g1_scripted_expert: full_depth_radius_m={self.full_depth_radius_m} must be below "
                f"descend_radius_m={self.descend_radius_m}"
            )
