"""Benchmarks: scripts that print measured figures (speed, LIBERO protocol, MetaWorld sample efficiency)."""
