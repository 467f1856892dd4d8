"""Seconds per LIBERO env step with a dit4dit checkpoint, policy vs simulator.
See `benchmarks.libero_env_step`.

    MUJOCO_GL=egl python examples/libero/time_env_step.py --policy-path CKPT --steps 40 --size 64
"""

from benchmarks.libero_env_step import main

if __name__ == "__main__":
    main()
