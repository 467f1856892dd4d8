"""Discovery shim for LeRobot's third-party plugin loader.

`lerobot.utils.import_utils.register_third_party_plugins` imports every installed distribution whose
metadata Name starts with ``lerobot_policy_`` under exactly that name. Importing this module registers
the ``dit4dit`` policy type, the ``unitree_g1_dit4dit`` robot type and the ``g1_scripted_expert``
teleoperator type with LeRobot's config registries. Only config modules are imported here (no zmq, no
MuJoCo): LeRobot finds each device class next to its config (``config_x.py`` -> ``x.py``).
"""

import lerobot_dit4dit  # noqa: F401
import lerobot_dit4dit.robots.unitree_g1_dit4dit  # noqa: F401
import lerobot_dit4dit.teleoperators.g1_scripted_expert  # noqa: F401
