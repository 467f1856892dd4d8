"""Offline builders for tests and examples (cf. diffusers' testing utils): a tiny Cosmos-Predict2.5 base built
from the real classes, and small LeRobot datasets. Nothing here is needed to train or run a policy."""
