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
tasks over a batch of 32). `RowGather` makes the DiT's text `to_k`/`to_v` project each distinct
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


class RowGather:
    """Row-wise modules (Linears) that, given a tensor made by `expand`, project its U distinct rows and
    gather the output per sample instead of projecting all B rows: `inner(rows).index_select(0, index)` has
    the same values as `inner(rows.index_select(0, index))`.

    The modules get a forward pre-hook (the rows go in instead of the expanded tensor) and a forward hook
    (the output is gathered): state_dict keys do not change, a PEFT wrapper around a module still calls it,
    and a copy of the model (`copy.deepcopy`) computes with its own weights, only without the gather. The
    hooks stay: a checkpointed block recomputes its forward during the backward pass, after the training step
    that built the tensor has returned, and must take the same path. Any other input runs as before. One
    expanded tensor is current at a time; `expand` replaces it.
    """

    def __init__(self):
        self._current: tuple[Tensor, Tensor, Tensor] | None = None  # (expanded, rows, index)

    def expand(self, rows: Tensor, index: Tensor) -> Tensor:
        """(U, ...) distinct rows, (B,) long row of each sample -> (B, ...) `rows.index_select(0, index)`."""
        expanded = rows.index_select(0, index)
        self._current = (expanded, rows, index)
        return expanded

    def clear(self) -> None:
        self._current = None

    def _rows_in(self, _module: nn.Module, args: tuple) -> tuple | None:
        current = self._current
        if current is not None and args and args[0] is current[0]:
            return (current[1], *args[1:])
        return None

    def _gathered_out(self, _module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        current = self._current
        if current is not None and args and args[0] is current[1]:
            return output.index_select(0, current[2])
        return None

    def install(self, modules: Iterable[nn.Module]) -> None:
        for module in modules:
            if getattr(module, "_dit4dit_row_gather", None) is self:
                continue
            module.register_forward_pre_hook(self._rows_in)
            module.register_forward_hook(self._gathered_out)
            module._dit4dit_row_gather = self


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
