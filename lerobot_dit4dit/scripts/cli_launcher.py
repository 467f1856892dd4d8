"""The helper process of `lerobot_dit4dit.sim.cli_launcher.Launcher`: imports the modules named on its command
line, then forks one LeRobot CLI run per request line on stdin (JSON: cmd, log, env, threads, timeout_s) and
answers each with its exit status. Started by `Launcher`, not by hand; see that module for why."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
import warnings
from importlib.metadata import entry_points
from pathlib import Path

from lerobot_dit4dit.sim.cli_launcher import READY


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


def serve(preload: list[str]) -> None:
    """The helper's loop (`lerobot_dit4dit.scripts.cli_launcher`): import `preload`, say READY on stdout,
    then fork a run per request line on stdin and answer each with its exit status, until stdin closes."""
    # Python warns at every fork of a process with more than one OS thread; here they are the native pools
    # of the module docstring, safe to fork as DataLoader workers are.
    warnings.filterwarnings("ignore", message=r".*is multi-threaded, use of fork\(\) may lead to deadlocks")
    for module in preload:
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


def main() -> None:
    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
