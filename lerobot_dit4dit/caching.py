"""Exact reuse of projections of inputs that do not change between calls.

Neither LeRobot's GR00T DiT nor diffusers' Cosmos transformer keeps a K/V cache for its cross-attention, yet
both attend to something static: the action DiT to the same video features at every Euler step of a chunk, the
video DiT to the same instruction at every chunk. `reusing_outputs` swaps the `to_k`/`to_v` projections for
wrappers that return the previous output while they see the very same input tensor (and the same weights,
dtype and autocast state). The computation is the one that would run anyway, so outputs are bit-identical.

A training step uses the same wrappers for one thing: the no-grad feature forward reuses, detached, the text
K/V that the video-loss forward computed with grad (`DiT4DiTPolicy._losses`). An output made without grad is
never handed to a call that needs one.

A training batch often repeats an instruction (one task per dataset when fine-tuning on a robot; LIBERO's 40
tasks over a batch of 32). `project_distinct_rows` makes the DiT's text `to_k`/`to_v` project each distinct
instruction once and gather the rows per sample, as the action head does for its r noise draws: the same
values, and gradients summed per instruction instead of per sample (equal within fp32 rounding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn


def tensor_version(t: Tensor) -> int:
    """The in-place modification counter of `t`; -1 for inference-mode tensors, which have none (they cannot
    be modified outside `torch.inference_mode`, and nothing here modifies them inside it)."""
    return -1 if t.is_inference() else t._version


class ReuseOutput(nn.Module):
    """Wraps a module; returns its cached output while it is called with the same tensor object again.

    It holds the input it saw, so that tensor cannot be freed and its memory handed to another one.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self._input: Tensor | None = None
        self._key: tuple | None = None
        self._output: Tensor | None = None
        self._with_grad = False

    def _state(self, x: Tensor) -> tuple:
        weights = tuple(tensor_version(p) for p in self.inner.parameters())
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else None
        return (tensor_version(x), weights, autocast, dtype)

    def forward(self, x: Tensor) -> Tensor:
        state, grad = self._state(x), torch.is_grad_enabled()
        if x is not self._input or state != self._key or (grad and not self._with_grad):
            self._input, self._key, self._with_grad, self._output = x, state, grad, self.inner(x)
        # A no-grad caller gets the values without the graph, as it would have computed them.
        return self._output.detach() if self._with_grad and not grad else self._output

    def clear(self) -> None:
        self._input = self._key = self._output = None
        self._with_grad = False


# On an expanded tensor: its (rows, index); on a hooked module: the index of the call in flight.
_GATHER = "_dit4dit_gather"


def expand_rows(rows: Tensor, index: Tensor) -> Tensor:
    """(U, ...) distinct rows, (B,) long row of each sample -> (B, ...) `rows.index_select(0, index)`, which
    a module hooked by `project_distinct_rows` projects on its U rows."""
    expanded = rows.index_select(0, index)
    setattr(expanded, _GATHER, (rows, index))  # the tensor carries them: any number of them can be in flight
    return expanded


def _rows_in(module: nn.Module, args: tuple) -> tuple | None:
    gather = getattr(args[0], _GATHER, None) if args else None
    # Only the module that swapped its input gathers its output: a hooked layer inside another one (a PEFT
    # wrapper's base layer) then sees the rows as a plain input.
    setattr(module, _GATHER, None if gather is None else gather[1])
    return None if gather is None else (gather[0], *args[1:])


def _gathered_out(module: nn.Module, _args: tuple, output: Tensor) -> Tensor | None:
    index = getattr(module, _GATHER, None)
    if index is None:
        return None
    setattr(module, _GATHER, None)
    return output.index_select(0, index)


def project_distinct_rows(modules: Iterable[nn.Module]) -> None:
    """Hook row-wise modules (Linears) so that, given a tensor made by `expand_rows`, they project its U
    distinct rows and gather the output per sample instead of projecting all B rows:
    `inner(rows).index_select(0, index)` has the same values as `inner(rows.index_select(0, index))`.

    Forward hooks, installed once: state_dict keys do not change, a PEFT wrapper around a module still calls
    it, and a checkpointed block that recomputes its forward in the backward pass takes the same path. Any
    other input runs as before.
    """
    for module in modules:
        if not getattr(module, "_dit4dit_distinct_rows", False):
            module.register_forward_pre_hook(_rows_in)
            module.register_forward_hook(_gathered_out)
            module._dit4dit_distinct_rows = True


@contextlib.contextmanager
def reusing_outputs(attentions: Iterable[nn.Module], wrappers: dict | None = None):
    """While active, `to_k`/`to_v` of each attention module reuse their output for a repeated input.

    Args:
        attentions: diffusers `Attention` modules whose keys/values come from a static context.
        wrappers: if given, the wrappers are kept there (keyed by module id) and reused by later calls, so a
            cache survives across calls; otherwise they live for this block only.
    """
    attentions = list(attentions)
    wrappers = {} if wrappers is None else wrappers
    originals = [(a.to_k, a.to_v) for a in attentions]
    for a, (k, v) in zip(attentions, originals, strict=True):
        if id(a) not in wrappers or wrappers[id(a)][0].inner is not k:
            wrappers[id(a)] = (ReuseOutput(k), ReuseOutput(v))
        a.to_k, a.to_v = wrappers[id(a)]
    try:
        yield
    finally:
        for a, (k, v) in zip(attentions, originals, strict=True):
            a.to_k, a.to_v = k, v
