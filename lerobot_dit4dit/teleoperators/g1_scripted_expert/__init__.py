"""`--teleop.type=g1_scripted_expert`: a closed-loop IK expert that presses the simulator's button."""

from .config_g1_scripted_expert import G1ScriptedExpertConfig

__all__ = ["G1ScriptedExpertConfig"]
