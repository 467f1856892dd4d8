"""dit4dit-libero-setup: set up LIBERO offline.

Its --help is the documentation of `lerobot_dit4dit.envs.libero`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lerobot_dit4dit.envs.libero import (
    SUITES,
    LiberoSetupError,
    setup_libero,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.envs.libero"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config-path",
        default=None,
        help="LIBERO config directory (default: $LIBERO_CONFIG_PATH, else ~/.libero)",
    )
    parser.add_argument("--suites", default=",".join(SUITES), help="comma-separated suites to check")
    parser.add_argument("--no-check", action="store_true", help="only write the config and link the assets")
    args = parser.parse_args(argv)
    try:
        out = setup_libero(
            args.config_path, [s for s in args.suites.split(",") if s], check=not args.no_check
        )
    except LiberoSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out['config']}:")
    for k, v in out["paths"].items():
        print(f"  {k}: {v}")
    print(f"assets: hf-libero reads them through {out['assets_link']}")
    for suite, n in out["tasks"].items():
        print(f"  {suite}: {n} tasks, BDDL files, init states and assets present")
    print(f"export LIBERO_CONFIG_PATH={Path(out['config']).parent}   # and MUJOCO_GL=egl without a display")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
