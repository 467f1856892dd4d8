"""The speed layer: every optimisation of a third-party module, installed here and nowhere else.

Each optimisation has a name in `FAST_PATHS`, and each can be switched off, for a before/after comparison or
to rule it out while debugging, with one switch:

    DIT4DIT_DISABLE=per_frame_adaln,text_kv_cache lerobot-eval ...     # environment, comma separated
    with fast_paths.disabled("per_frame_adaln"): ...                    # in Python

A disabled path runs the third-party module's own forward (or, for the caches and the gather, recomputes),
so the outputs are those of plain diffusers / LeRobot. Every path gives the same values as the code it
replaces up to float rounding; the caches are exact (they return what the same call computed before).

Each optimisation is a `Hook` installed under its name on a module instance (state_dict keys never change;
installing twice is a no-op). Not diffusers' `HookRegistry`: it installs each hook as a `functools.partial`,
which torch.compile guards by object id, so every compiled Cosmos block (one shared code object) would
recompile for every other block; a plain function per instance is guarded by its code and compiles once.
Caches are keyed explicitly: the caller passes a key (an instruction key, a chunk or a training-step counter)
for the span in which an input is known not to change; no cache ever compares tensor objects.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Hashable, Iterable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

# name -> what it does. The README's speed reference (docs/speed.md) measures each against its "before".
FAST_PATHS = {
    "single_frame_conv": "Wan VAE causal 3D convs run as a 2D conv on a single uncached frame",
    "fast_rms_norm": "Wan RMS norms divide by the summed squares' root instead of F.normalize",
    "per_frame_adaln": "Cosmos blocks compute their adaLN modulation once per latent frame, not per token",
    "text_kv_cache": "inference: the video DiT's text K/V are projected once per instruction key",
    "shared_text_kv": "training: the feature forward reuses the video-loss forward's text K/V",
    "instruction_gather": "training: the text path runs once per distinct instruction of the batch",
    "action_kv_cache": "inference: the action DiT's feature K/V are projected once per chunk",
    "shared_context_attention": "training: the action DiT projects each sample's features once for its draws",
    "inference_cast": "a process that only acts casts the trained weights to `dtype` once",
}
DISABLE_ENV = "DIT4DIT_DISABLE"
_disabled: set[str] = set()


def _check_names(names: Iterable[str], source: str) -> None:
    unknown = sorted(set(names) - FAST_PATHS.keys())
    if unknown:
        raise ValueError(f"DiT4DiT: unknown fast path(s) {unknown} in {source}; known: {sorted(FAST_PATHS)}.")


def disabled_by_env() -> frozenset[str]:
    """The names listed in `DIT4DIT_DISABLE` (raises ValueError naming an unknown one)."""
    return _parse_disabled(os.environ.get(DISABLE_ENV, ""))


@functools.lru_cache(maxsize=8)
def _parse_disabled(value: str) -> frozenset[str]:
    # Cached by the variable's text: `enabled` runs in every hooked module's forward.
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    _check_names(names, DISABLE_ENV)
    return names


@torch.compiler.assume_constant_result
def enabled(name: str) -> bool:
    """Whether the fast path `name` is on (not disabled by `disabled()` or `DIT4DIT_DISABLE`).

    Inside a `torch.compile`d module it is read once, when the module is compiled (a graph constant)."""
    _check_names([name], "fast_paths.enabled")
    return name not in _disabled and name not in disabled_by_env()


@contextlib.contextmanager
def disabled(*names: str):
    """While active, the named fast paths are off in this process."""
    _check_names(names, "fast_paths.disabled")
    added = set(names) - _disabled
    _disabled.update(added)
    try:
        yield
    finally:
        _disabled.difference_update(added)


class Hook:
    """One optimisation on one module: `new_forward(module, *args, **kwargs)` replaces the module's forward
    and calls `self.original` (the forward it wraps) for everything it does not handle."""

    original = None

    def new_forward(self, module: nn.Module, *args, **kwargs):
        raise NotImplementedError


def _install(module: nn.Module, hook: Hook, name: str) -> bool:
    """Install `hook` on `module` under `name` once; returns True when newly installed."""
    hooks = module.__dict__.setdefault("_dit4dit_hooks", {})
    if name in hooks:
        return False
    hook.original = module.forward

    def forward(*args, _hook=hook, _module=module, **kwargs):
        return _hook.new_forward(_module, *args, **kwargs)

    module.forward = forward
    hooks[name] = hook
    return True


def get_hook(module: nn.Module, name: str) -> Hook | None:
    """The hook installed on `module` under `name`, or None."""
    return module.__dict__.get("_dit4dit_hooks", {}).get(name)


def _original(hook: Hook):
    return hook.original


# ---------------------------------------------------------------------------------------------- Wan VAE
class SingleFrameConv(Hook):
    """A Wan causal 3D conv on one frame without cache: only the kernel's last temporal slice meets data (the
    causal padding in front is zeros), so it is a 2D conv with that slice. diffusers convolves the padding
    too. Reads the private `WanCausalConv3d._padding` (guarded in tests/test_upstream.py)."""

    def new_forward(self, conv: nn.Module, x: Tensor, cache_x: Tensor | None = None) -> Tensor:
        causal = conv._padding[4] == conv.kernel_size[0] - 1 and conv.stride[0] == 1 and conv.dilation[0] == 1
        if not causal or cache_x is not None or x.shape[2] != 1 or not enabled("single_frame_conv"):
            return _original(self)(x, cache_x)
        frame = F.pad(x[:, :, 0], list(conv._padding[:4])).contiguous()
        weight = conv.weight[:, :, -1]
        out = F.conv2d(frame, weight, conv.bias, conv.stride[1:], 0, conv.dilation[1:], conv.groups)
        return out.unsqueeze(2)


class FastRMSNorm(Hook):
    """diffusers' `WanRMS_norm` calls `F.normalize` over the channels; on CPU that strided reduction is far
    slower than `square().sum().sqrt()`. Same formula (x / max(||x||, 1e-12), fp32 for half inputs)."""

    def new_forward(self, norm: nn.Module, x: Tensor) -> Tensor:
        if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or not enabled("fast_rms_norm"):
            return _original(self)(x)
        dim = 1 if norm.channel_first else -1
        xf = x.float()
        normalized = xf / xf.square().sum(dim, keepdim=True).sqrt().clamp_min(1e-12)
        del xf  # freed before the cast back, as in diffusers: one fp32 copy fewer at the peak
        return normalized.to(x.dtype) * norm.scale * norm.gamma + norm.bias


def install_vae_fast_paths(vae: nn.Module) -> int:
    """Hook every Wan causal conv and RMS norm under `vae` (call again after loading the decoder: idempotent).
    Returns the number of modules newly hooked."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    count = 0
    for module in vae.modules():
        if isinstance(module, WanCausalConv3d):
            count += _install(module, SingleFrameConv(), "dit4dit_single_frame_conv")
        elif isinstance(module, WanRMS_norm):
            count += _install(module, FastRMSNorm(), "dit4dit_fast_rms_norm")
    return count


# ---------------------------------------------------------------------------------------------- Cosmos DiT
class LatentFrames:
    """Latent frame count of the video-DiT call in progress; None outside `CosmosVideoBackbone.forward`."""

    def __init__(self):
        self.frames: int | None = None

    @contextlib.contextmanager
    def set(self, frames: int):
        self.frames = frames
        try:
            yield
        finally:
            self.frames = None


class PerFrameAdaLN(Hook):
    """diffusers expands the per-frame timestep embedding to every token before the blocks, so each
    `CosmosAdaLayerNormZero` runs its two linears on H*W equal rows per frame. This computes one row per frame
    and broadcasts: the same (B, T*H*W, D) tensors up to float rounding. Active only while `frames` is set
    (inside the backbone's forward, which always passes a (B, 1, T, 1, 1) timestep) and not under gradient
    checkpointing, whose recomputation runs after the frame count is unset: both passes must take one path."""

    def __init__(self, frames: LatentFrames, transformer: nn.Module):
        self.frames = frames
        self.transformer = transformer

    def new_forward(self, norm: nn.Module, hidden_states: Tensor, embedded_timestep: Tensor, temb=None):
        t = self.frames.frames
        checkpointed = torch.is_grad_enabled() and self.transformer.gradient_checkpointing
        if (
            t is None
            or checkpointed
            or embedded_timestep.ndim != 3
            or hidden_states.shape[1] % t
            or not enabled("per_frame_adaln")
        ):
            return _original(self)(hidden_states, embedded_timestep, temb)
        hw = hidden_states.shape[1] // t
        emb = embedded_timestep.unflatten(1, (t, hw))[:, :, 0]  # (B, T, C): rows are equal within a frame
        mod = norm.linear_2(norm.linear_1(norm.activation(emb)))  # (B, T, 3D)
        if temb is not None:
            mod = mod + temb.unflatten(1, (t, hw))[:, :, 0]
        shift, scale, gate = (x.unsqueeze(2) for x in mod.chunk(3, dim=-1))  # (B, T, 1, D)
        out = norm.norm(hidden_states).unflatten(1, (t, hw)) * (1 + scale) + shift
        return out.flatten(1, 2), gate.expand(-1, -1, hw, -1).flatten(1, 2)


class SkipProjection(Hook):
    """Lets the Cosmos DiT take an already-projected text context (diffusers' forward has no switch for it):
    while `active`, `crossattn_proj` returns its input."""

    def __init__(self):
        self.active = False

    def new_forward(self, proj: nn.Module, x: Tensor) -> Tensor:
        return x if self.active else _original(self)(x)

    @contextlib.contextmanager
    def skipping(self, skip: bool = True):
        previous, self.active = self.active, skip
        try:
            yield
        finally:
            self.active = previous


def install_transformer_fast_paths(transformer: nn.Module, frames: LatentFrames) -> SkipProjection:
    """Hook every `CosmosAdaLayerNormZero` of the blocks (idempotent: blocks read later, e.g. deferred ones,
    get it on the next call) and `crossattn_proj`; returns the projection switch."""
    from diffusers.models.transformers.transformer_cosmos import CosmosAdaLayerNormZero

    for norm in transformer.transformer_blocks.modules():
        if isinstance(norm, CosmosAdaLayerNormZero):
            _install(norm, PerFrameAdaLN(frames, transformer), "dit4dit_per_frame_adaln")
    _install(transformer.crossattn_proj, SkipProjection(), "dit4dit_skip_projection")
    return get_hook(transformer.crossattn_proj, "dit4dit_skip_projection")


# ---------------------------------------------------------------------------------------------- caches
def tensor_version(t: Tensor) -> int:
    """The in-place modification counter of `t`; -1 for inference-mode tensors, which have none."""
    return -1 if t.is_inference() else t._version


class CacheKey:
    """The key under which keyed projections may reuse their output; None (the default) reuses nothing.

    The caller sets it for a span in which it knows the input of every hooked projection is the same value
    whenever the key is the same (`with key.use(("chunk", n)): ...`)."""

    def __init__(self, name: str):
        self.name = name  # the FAST_PATHS entry that switches it off
        self.value: Hashable | None = None

    @contextlib.contextmanager
    def use(self, value: Hashable | None):
        previous = self.value
        self.value = value if enabled(self.name) else None
        try:
            yield
        finally:
            self.value = previous


class KeyedOutput(Hook):
    """Returns a projection's stored output while `key` holds the value it was computed under, with the same
    weights (their in-place version), dtype and autocast state. An output made with grad is handed, detached,
    to a no-grad caller; one made without grad is never handed to a caller that needs one."""

    def __init__(self, key: CacheKey):
        self.key = key
        self.clear()

    def clear(self) -> None:
        self.stored: tuple | None = None
        self.output: Tensor | None = None
        self.with_grad = False

    def new_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        if self.key.value is None:
            return _original(self)(x)
        autocast = torch.is_autocast_enabled(x.device.type)
        stored = (
            self.key.value,
            tuple(tensor_version(p) for p in module.parameters()),
            x.dtype,
            autocast,
            torch.get_autocast_dtype(x.device.type) if autocast else None,
        )
        grad = torch.is_grad_enabled()
        if stored != self.stored or (grad and not self.with_grad):
            self.stored, self.with_grad, self.output = stored, grad, _original(self)(x)
        return self.output.detach() if self.with_grad and not grad else self.output


def install_keyed_kv(attentions: Iterable[nn.Module], key: CacheKey) -> int:
    """Hook `to_k` / `to_v` of each attention module with a `KeyedOutput` reading `key` (idempotent per key
    name: a module wrapped later, e.g. by PEFT, is hooked on its next install). Returns the count hooked."""
    name = f"dit4dit_{key.name}"
    count = 0
    for attn in attentions:
        for proj in (attn.to_k, attn.to_v):
            count += _install(proj, KeyedOutput(key), name)
    return count


class RowGather:
    """The distinct rows of a training batch's text context: `index` (B,) maps each sample to one of the U
    distinct instructions. While set, hooked projections given a (U, ...) input return their (B, ...) output
    `proj(x).index_select(0, index)`: the same values as projecting the B expanded rows, with the gradient
    summed per instruction.

    It is set for the whole training step (a checkpointed block recomputes its forward in the backward pass
    and must take the same path) and replaced by the next video-DiT forward."""

    def __init__(self):
        self.index: Tensor | None = None
        self.rows = 0
        self._in_flight = False  # a hooked module inside a hooked wrapper (PEFT) passes its rows through

    def set(self, index: Tensor | None, rows: int = 0) -> None:
        self.index, self.rows = index, rows


class GatherRows(Hook):
    def __init__(self, gather: RowGather):
        self.gather = gather

    def new_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        g = self.gather
        if g.index is None or g._in_flight or x.shape[0] != g.rows:
            return _original(self)(x)
        g._in_flight = True
        try:
            out = _original(self)(x)
        finally:
            g._in_flight = False
        return out.index_select(0, g.index)


def install_row_gather(modules: Iterable[nn.Module], gather: RowGather) -> int:
    """Hook row-wise modules (the DiT's text `to_k` / `to_v`) with `GatherRows` (idempotent)."""
    return sum(_install(m, GatherRows(gather), "dit4dit_instruction_gather") for m in modules)


_step_counter = itertools.count()


def next_step_key(prefix: str) -> tuple[str, int]:
    """A key never used before in this process (a chunk, a training step)."""
    return (prefix, next(_step_counter))


# ---------------------------------------------------------------------------------------------- GR00T DiT
class CheckpointedBlock(Hook):
    """LeRobot's GR00T `DiT` declares `_supports_gradient_checkpointing` but its forward never checkpoints:
    recompute the block in the backward pass instead of storing its activations."""

    def new_forward(self, block: nn.Module, *args, **kwargs):
        if block.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(_original(self), *args, use_reentrant=False, **kwargs)
        return _original(self)(*args, **kwargs)


def install_block_checkpointing(blocks: Iterable[nn.Module]) -> int:
    return sum(_install(b, CheckpointedBlock(), "dit4dit_checkpointing") for b in blocks)
