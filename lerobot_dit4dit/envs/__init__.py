"""Simulator glue: offline LIBERO setup and MetaWorld recording/evaluation helpers around LeRobot's own
envs."""
