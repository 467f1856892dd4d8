"""Teleoperators for dit4dit's robots. Importing a config module registers its `--teleop.type`."""
