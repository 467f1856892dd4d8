"""What dit4dit does about multi-process training that LeRobot and torch do not do for it."""

from __future__ import annotations

import atexit

import torch.distributed as dist

# The process group a dit4dit policy was built under, held until the interpreter exits (see below).
_HELD_GROUPS: list = []


def hold_process_group() -> None:
    """Keep a Python reference to the default process group until exit, so that it is destroyed through
    torch's ProcessGroup binding, which releases the GIL first.

    Why: two-process CPU (gloo) training through `lerobot-train` could deadlock a rank in its exit.
    `lerobot/scripts/lerobot_train.py:784` (LeRobot 0.6.1) calls `accelerator.end_training()`, which destroys
    the process group (`accelerate/state.py:816`) while the DDP-wrapped policy, a local of `train()`, still
    holds it through its C++ Reducer. The group's last reference then went when `train()` returned
    (`lerobot/configs/parser.py:436`), inside `~Reducer`, which torch runs with the GIL held (Reducer is bound
    as a plain shared_ptr class in `torch/csrc/distributed/c10d/init.cpp`). `~ProcessGroupGloo` joins its
    worker threads; a worker still dropping a finished work item frees a tensor created in Python (the metrics
    all-reduce, `lerobot_train.py:634`) and waits for the GIL: the rank never exits while the other has.
    Held here, the group outlives the Reducer, and its last reference goes at exit through the ProcessGroup
    binding (`IntrusivePtrNoGilDestructor`, same init.cpp), which releases the GIL before destroying it.
    No effect in a process without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    group = dist.group.WORLD
    if any(held is group for held in _HELD_GROUPS):
        return
    if not _HELD_GROUPS:
        atexit.register(_HELD_GROUPS.clear)
    _HELD_GROUPS.append(group)
