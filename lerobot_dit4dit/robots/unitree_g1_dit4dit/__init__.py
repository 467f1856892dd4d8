"""`--robot.type=unitree_g1_dit4dit`: LeRobot's Unitree G1 with `.pos` joints, an arm-only mode and a safety
layer. Only the config is imported here, so registering the type stays light (no zmq, no SDK)."""

from .config_unitree_g1_dit4dit import UnitreeG1Dit4ditConfig

__all__ = ["UnitreeG1Dit4ditConfig"]
