"""Discovery shim for LeRobot's third-party plugin loader.

`lerobot.utils.import_utils.register_third_party_plugins` imports every installed distribution whose
metadata Name starts with ``lerobot_policy_`` under exactly that name. Importing this module registers
the ``dit4dit`` policy type with LeRobot's config registry.
"""

import lerobot_dit4dit  # noqa: F401
