"""The official LIBERO protocol through `lerobot-eval` (4 suites x 10 tasks x 50 episodes), resumable.
See `benchmarks.libero_protocol`.

    MUJOCO_GL=egl python examples/libero/eval_protocol.py --policy-path CKPT \
        --output-dir outputs/libero_protocol --device cuda --batch-size 10
"""

from benchmarks.libero_protocol import main

if __name__ == "__main__":
    raise SystemExit(main())
