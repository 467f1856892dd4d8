"""Robots driven by dit4dit. Importing a robot's config module registers its `--robot.type`."""
