"""Start LeRobot's CLIs in a fraction of a second: fork each run from one process that imported them once.

A short `lerobot-train`, `lerobot-record` or `lerobot-rollout` run spends most of its time importing LeRobot,
torch and this plugin, again in every process. `Launcher` starts one helper process (`python -m
lerobot_dit4dit.scripts.cli_launcher`) that imports the CLIs' modules once and then forks a child for every
run, which calls the same console-script entry point (`lerobot.scripts.lerobot_train:main`, ...) with the same
argv, output going to the run's log. What is not shared is only the interpreter start and the imports.

Used by `g1_loop.run_cli` inside `forked_clis()`; `benchmarks/g1_video_first.py --cli-start=fork` turns it
on (the default of its --smoke mode), `--cli-start=exec` starts every CLI as a new process.

The helper forks from its main thread after imports only, not from the caller, which holds live ZMQ sockets
(their I/O threads) while it records and rolls out. It has run no torch op, so there is no torch thread pool
to inherit; its only other threads are native pools started by imports (pyarrow's jemalloc, BLAS), which
install fork handlers: the situation of every forked DataLoader worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

# The CLIs the G1 loop runs, imported once by the helper; a run of another one still works, importing it then.
PRELOAD = (
    "lerobot.scripts.lerobot_train",
    "lerobot.scripts.lerobot_record",
    "lerobot.scripts.lerobot_rollout",
    "lerobot.scripts.lerobot_teleoperate",
    "lerobot.scripts.lerobot_edit_dataset",
    "lerobot_policy_dit4dit",
    "lerobot_dit4dit.latent_cache",
)
READY = "READY"
HELPER = "lerobot_dit4dit.scripts.cli_launcher"  # the helper: a command line of its own


def forkable(cmd: list[str]) -> bool:
    """Whether `cmd` is a console script of an installed package (`lerobot-train ...`) or `python -m <module>`
    run by this interpreter: what the helper can run without starting a new interpreter."""
    if cmd[0] == sys.executable and len(cmd) > 2 and cmd[1] == "-m":
        return True
    return bool(entry_points(group="console_scripts", name=Path(cmd[0]).name))


class Launcher:
    """The helper process: `run(cmd, log, env, threads, timeout_s) -> exit status`; a context manager."""

    def __init__(self, log: Path, preload: tuple[str, ...] = PRELOAD):
        """Start the helper, its output in `log`; returns once it has imported `preload`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(log, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", HELPER, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.log, self._ready = log, False

    def _wait_ready(self) -> None:
        """Its READY line, once it has imported LeRobot and torch, says it can fork runs. Waited for at the
        first run, so that the caller can do other work (start the simulator) while it imports."""
        if not self._ready:
            line = self.proc.stdout.readline().strip()
            if line != READY:
                raise RuntimeError(f"the CLI launcher did not start (got {line!r}); see {self.log}")
            self._ready = True

    def run(
        self,
        cmd: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        threads: int | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Run `cmd` in a child forked from the helper; its stdout and stderr go to `log`; `env`, when given,
        is its whole environment. Returns its exit status; raises `subprocess.TimeoutExpired` (after killing
        it) past `timeout_s`."""
        self._wait_ready()
        request = {"cmd": cmd, "log": str(log), "env": env or {}, "threads": threads, "timeout_s": timeout_s}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI launcher exited (status {self.proc.wait()}) while running {cmd[:2]}")
        reply = json.loads(line)
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(cmd, timeout_s)
        return reply["returncode"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # EOF: the helper exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
