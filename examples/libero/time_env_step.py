"""Seconds per LIBERO env step with a dit4dit checkpoint, policy vs simulator.
See `lerobot_dit4dit.benchmarks.libero_env_step`.

    MUJOCO_GL=egl python examples/libero/time_env_step.py --policy-path CKPT --steps 40 --size 64
"""

from lerobot_dit4dit.benchmarks.libero_env_step import main

if __name__ == "__main__":
    main()
