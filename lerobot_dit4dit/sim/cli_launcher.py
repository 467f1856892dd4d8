"""Start LeRobot's CLIs in a fraction of a second: fork each run from one process that imported them once.

A short `lerobot-train`, `lerobot-record` or `lerobot-rollout` run spends most of its time importing LeRobot,
torch and this plugin, again in every process. `Launcher` starts one helper process (`python -m
lerobot_dit4dit.sim.cli_launcher`) that imports the CLIs' modules once and then forks a child for every
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

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
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
            [sys.executable, "-m", __name__, *preload],
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


# ------------------------------------------------------------------------------------------- the helper side
def _entry(cmd: list[str]):
    """(argv for the run, the function that runs it)."""
    if cmd[0] == sys.executable and cmd[1] == "-m":
        import runpy

        module = cmd[2]
        return [module, *cmd[3:]], lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    name = Path(cmd[0]).name
    (script,) = entry_points(group="console_scripts", name=name)
    return [cmd[0], *cmd[1:]], lambda: sys.exit(script.load()())


def _child(request: dict) -> None:
    """In the forked child: the run's output to its log, its argv and environment, then the entry point.
    Never returns."""
    status = 1
    try:
        os.setpgid(0, 0)  # its own process group, so a timeout kills what it started too
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if request["env"]:
            # The caller's environment now, as a new process would get it (the helper's is from its start).
            os.environ.clear()
            os.environ.update(request["env"])
        if request["threads"] is not None:
            # What OMP_NUM_THREADS does for a new process; torch read it when the helper imported it.
            import torch

            torch.set_num_threads(request["threads"])
        sys.argv, run = _entry(request["cmd"])
        run()
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _wait(pid: int, timeout_s: float | None) -> tuple[int, bool]:
    """(exit status, timed out) of the child `pid`, killing its process group past `timeout_s`."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL, True
        time.sleep(0.05)


def main() -> None:
    # Python warns at every fork of a process with more than one OS thread; here they are the native pools
    # of the module docstring, safe to fork as DataLoader workers are.
    warnings.filterwarnings("ignore", message=r".*is multi-threaded, use of fork\(\) may lead to deadlocks")
    for module in sys.argv[1:]:
        importlib.import_module(module)
    out = sys.stdout
    print(READY, file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        returncode, timed_out = _wait(pid, request["timeout_s"])
        print(json.dumps({"returncode": returncode, "timed_out": timed_out}), file=out, flush=True)


if __name__ == "__main__":
    main()
