"""The wheel is the plugin: what it holds, that its commands run from it alone, and that imports run one
way."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from utils import ROOT

PACKAGE = "lerobot_dit4dit"


def _modules(*folders: str) -> dict[str, Path]:
    mods = {}
    for folder in folders:
        for f in (ROOT / folder).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (module level or inside functions)."""
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [mod, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    edges[m].add(t)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(edges):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_imports_run_one_way():
    """No import cycle in the package or the benchmarks; the package never imports the tooling around it
    (benchmarks, tests, examples); library modules never import the command lines (`scripts`), and only the
    command lines are run as `__main__`."""
    mods = _modules(PACKAGE, "benchmarks")
    edges = _imports(mods)
    assert _cycle(edges) is None, f"import cycle: {' -> '.join(_cycle(edges))}"
    # `serve` is a command line too (`python -m lerobot_dit4dit.serve`, LeRobot's policy server).
    commands = (f"{PACKAGE}.scripts", f"{PACKAGE}.serve")
    library = {m: e for m, e in edges.items() if m.startswith(PACKAGE) and not m.startswith(commands)}
    for m, targets in library.items():
        assert not {t for t in targets if t.startswith(("benchmarks", *commands))}, m
        text = mods[m].read_text()
        assert "__main__" not in text and "import argparse" not in text, f"{m} holds a command line"
        assert "parents[" not in text, f"{m} reads the checkout around it"
    for m in mods:
        if m.startswith(f"{PACKAGE}.scripts.") and m.count(".") == 2:
            assert "def main(" in mods[m].read_text(), m


def _project_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of what the distribution is made of, so that no build/ left in the checkout by an
    # earlier build can slip stale modules into the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "lerobot_policy_dit4dit.py"):
        shutil.copy(ROOT / name, source / name)
    for name in (PACKAGE, "configs", "hub_cards"):
        shutil.copytree(
            ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    subprocess.run([*pip, str(source)], check=True, timeout=300)
    (built,) = out.glob("lerobot_policy_dit4dit-*.whl")
    return built


def test_wheel_holds_the_plugin_and_nothing_else(wheel):
    """The wheel holds the package with its data (presets, model card template, G1 scene, chat template) and
    the discovery shim; the benchmarks, tests and examples stay in the repository."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "lerobot_policy_dit4dit.py" in names
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {PACKAGE, "lerobot_policy_dit4dit.py"}, tops
    for preset in (ROOT / "configs").glob("*.json"):
        assert f"{PACKAGE}/presets/{preset.name}" in names, preset.name
    for data in (
        "hub_cards/dit4dit_model_card.md",
        "sim/assets/g1_capsules.xml",
        "testing/qwen2_vl_chat_template.jinja",
    ):
        assert f"{PACKAGE}/{data}" in names, data
    assert not [n for n in names if "/benchmarks/" in n or n.startswith(("tests/", "examples/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for command, target in _project_scripts().items():
        assert f"{command} = {target}" in text, command


def test_every_command_runs_from_the_installed_wheel(wheel, tmp_path):
    """Installed with --no-deps into a target directory, every `[project.scripts]` command answers --help from
    another directory, importing the package from the wheel (not the checkout), and the presets resolve
    inside it."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import lerobot_dit4dit, lerobot_dit4dit.recipes as r; "
        "print(lerobot_dit4dit.__file__); print(r.preset_path('unitree_g1_sim'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert all(Path(p).resolve().is_relative_to(target.resolve()) for p in out), out
    # One process runs every installed script (as its console entry point would) with --help: the imports
    # are paid once.
    runner = """
import contextlib, io, json, runpy, sys
results = {}
for script in sys.argv[1:]:
    out, sys.argv = io.StringIO(), [script, "--help"]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    results[script] = (code, out.getvalue())
print(json.dumps(results))
"""
    scripts = [str(target / "bin" / command) for command in _project_scripts()]
    assert all(Path(s).is_file() for s in scripts), scripts
    done = subprocess.run(
        [sys.executable, "-c", runner, *scripts],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for script, (code, text) in results.items():
        assert code in (0, None) and "usage:" in text, (
            f"{Path(script).name} --help: exit {code}\n{text[-500:]}"
        )
