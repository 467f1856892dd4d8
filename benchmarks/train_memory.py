"""Peak memory of a DiT4DiT training step at real width, on fake tensors: no weights, no compute, no GPU.

    python -m benchmarks.train_memory                    # configs/libero.json, B=4, 4 recipes
    python -m benchmarks.train_memory --batch-size 8 --recipes full checkpointing
    python -m benchmarks.train_memory --preset robocasa_gr1 --json mem.json
    python -m benchmarks.train_memory --measure --base <Cosmos-Predict2.5-2B directory> \
        --device cuda --recipes checkpointing       # the same steps on real tensors: measured, one recipe

The policy of a preset is built from a base whose video DiT is the real Cosmos-Predict2.5-2B config
(`common.REAL_TRANSFORMER`, never initialised), with the real Wan 2.1 VAE. Every tensor is then replaced by a
`FakeTensor` (a shape, a dtype and a device, no storage), and two training steps run on them as lerobot-train
runs them: the policy's forward under its bf16 autocast, backward, gradient clipping, AdamW. `LiveBytes`
counts the bytes of every tensor storage alive at each moment, and the peak is the figure.

What the figure is: the bytes of live tensors (`torch.cuda.max_memory_allocated` counts the same, rounded to
512-byte blocks). It leaves out the CUDA context and library workspaces (about 0.5-1 GiB), the caching
allocator's fragmentation (`max_memory_reserved` is higher), the frozen text encoder (its prompt embeddings
are cached before training), and, under FSDP, the gathered shards and communication buffers. The kernels are
the CPU ones: CPU autocast casts nearly the same ops to bf16 as CUDA autocast, and attention runs the fused
CPU kernel, which like CUDA's flash attention keeps only its output and log-sum-exp for the backward. AdamW
is the preset's (`optimizer_fused`: torch's fused kernel, which updates in place; torch's foreach default
would hold one extra fp32 copy of the trained parameters during `step`).
"""

from __future__ import annotations

import argparse
import json
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lerobot_dit4dit.recipes import preset_path

from .common import RECIPE_TITLES, RECIPES, recipe_policy, trained_param_groups

GIB = 2**30


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive now, and their peaks, for every tensor an op returns while the mode
    is active and every tensor passed to `track`.

    Written here because torch's `MemTracker` (torch.distributed._tools) refuses modules with frozen
    parameters (it hooks every parameter's gradient), and the policy's VAE is frozen. Each storage is counted
    once (views share it) and uncounted when the storage is freed. Each storage is labelled with the `phase`
    it was made in ("state", "forward", "backward", "optimizer"), or relabelled "grads" (`relabel`); the
    bytes beyond the persistent ones (state, gradients, optimizer moments) during the forward and backward
    are the activations. `.item()` of a fake tensor returns 1.0: it has no value, and a training step only
    logs its losses.
    """

    PERSISTENT = ("state", "grads", "optimizer")

    def __init__(self):
        super().__init__()
        self.phase = "state"
        self._live: dict[int, tuple[int, str]] = {}  # storage id -> (bytes, label)
        self.current = 0
        self.by_phase: dict[str, int] = {}
        self.peak = 0
        self.peak_at = ""
        self.phase_peaks: dict[str, int] = {}  # phase -> the most bytes alive while it ran
        self.activation_peak = 0  # the most non-persistent bytes alive during a forward or backward

    def track(self, *tensors) -> None:
        for t in tree_leaves(tensors):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self._live:
                continue
            n = storage.nbytes()
            self._live[key] = (n, self.phase)
            self.current += n
            self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + n
            weakref.finalize(storage, self._free, key)
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), self.current)
            if self.current > self.peak:
                self.peak, self.peak_at = self.current, self.phase
            if self.phase in ("forward", "backward"):
                transient = self.current - sum(self.by_phase.get(p, 0) for p in self.PERSISTENT)
                self.activation_peak = max(self.activation_peak, transient)

    def relabel(self, tensor: torch.Tensor, label: str) -> None:
        """Count `tensor`'s storage under `label` from now on (e.g. a gradient made in the backward)."""
        key = tensor.untyped_storage()._cdata
        n, old = self._live[key]
        self._live[key] = (n, label)
        self.by_phase[old] -= n
        self.by_phase[label] = self.by_phase.get(label, 0) + n

    def _free(self, key: int) -> None:
        n, label = self._live.pop(key)
        self.current -= n
        self.by_phase[label] -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            return 1.0
        out = func(*args, **(kwargs or {}))
        self.track(out)
        return out


@dataclass
class MemoryEstimate:
    """One recipe's training state and peaks, in bytes."""

    recipe: str
    trained_params: int
    total_params: int
    weights: int  # every parameter, as stored (fp32 master weights)
    grads_and_adamw: int  # fp32 gradients and two AdamW moments of the trained parameters
    activations: int  # the most bytes beyond weights, gradients and AdamW moments during forward/backward
    peak: int  # all live tensors at the peak of a training step
    peak_phase: str  # forward, backward or optimizer
    phase_peaks: dict[str, int] = field(default_factory=dict)  # forward / backward / optimizer -> peak
    # Real tensors only (`fake=False`): seconds of each step, and on CUDA `torch.cuda.max_memory_allocated`.
    step_s: list[float] = field(default_factory=list)
    cuda_peak: int | None = None

    @property
    def forward_backward_peak(self) -> int:
        return max(self.phase_peaks.get("forward", 0), self.phase_peaks.get("backward", 0))

    def row(self) -> dict:
        return {
            "trained parameters (M)": self.trained_params / 1e6,
            "weights (GiB)": self.weights / GIB,
            "grads + AdamW (GiB)": self.grads_and_adamw / GIB,
            "activations and temporaries (GiB)": self.activations / GIB,
            "forward/backward peak (GiB)": self.forward_backward_peak / GIB,
            "optimizer-step peak (GiB)": self.phase_peaks.get("optimizer", 0) / GIB,
            "peak (GiB)": self.peak / GIB,
            "peak during": self.peak_phase,
        }


def preset_policy_config(preset: str, base_model: str, **overrides):
    """The `DiT4DiTConfig` of `configs/<preset>.json` on `base_model`, with its cameras at the preset's
    resolution and a state and an action that fill its padded widths (LIBERO: 8 -> sin/cos 16, and 7 of 8).
    The model sees only the padded widths, so the raw ones do not change the figures."""
    import draccus
    from lerobot.configs import FeatureType, PolicyFeature

    from lerobot_dit4dit.configuration_dit4dit import DiT4DiTConfig

    policy = json.loads(preset_path(preset).read_text())["policy"]
    policy = {k: v for k, v in policy.items() if k not in ("type", "base_model_revision")}
    policy.update({"base_model": base_model, "device": "cpu", **overrides})
    cfg = draccus.decode(DiT4DiTConfig, policy)
    h, w = cfg.image_resolution
    cameras = list(cfg.camera_order) or ["observation.images.image"]  # an offline preset names none
    state_dim = cfg.max_state_dim if cfg.state_encoding == "none" else cfg.max_state_dim // 2
    cfg.input_features = {
        **{c: PolicyFeature(FeatureType.VISUAL, (3, h, w)) for c in cameras},
        "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,)),
    }
    cfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (cfg.max_action_dim - 1,))}
    return cfg


def write_estimate_base(directory: str | Path, transformer_config: dict | None = None) -> Path:
    """A base for estimates: the tiny text encoder and tokenizer, the real Wan 2.1 VAE with random weights,
    and a video DiT stored as its config only (`transformer_config`, default the real one)."""
    from dataclasses import replace

    from diffusers import CosmosTransformer3DModel

    from lerobot_dit4dit.testing.tiny_base import TINY_BASE, WAN21_VAE_SIZES, build_tiny_cosmos_base

    from .common import REAL_TRANSFORMER

    sizes = replace(TINY_BASE, **WAN21_VAE_SIZES)
    directory = build_tiny_cosmos_base(directory, sizes, calibrate_latents=False)
    for weights in (directory / "transformer").glob("*.safetensors"):
        weights.unlink()
    with torch.device("meta"):
        transformer = CosmosTransformer3DModel(**(transformer_config or REAL_TRANSFORMER))
    transformer.save_config(directory / "transformer")
    return directory


def _fake_module(module: torch.nn.Module, fake_mode) -> None:
    """Replace every parameter and buffer of `module` by a FakeTensor of its shape and dtype on the CPU."""
    from torch._subclasses.fake_tensor import FakeTensorConverter

    converter = FakeTensorConverter()
    fakes: dict[int, torch.Tensor] = {}  # a tensor shared by several modules stays one (and counts once)

    def fake(t: torch.Tensor, parameter: bool) -> torch.Tensor:
        if id(t) not in fakes:
            f = converter.from_meta_and_device(fake_mode, t.to("meta"), torch.device("cpu"))
            fakes[id(t)] = torch.nn.Parameter(f, requires_grad=t.requires_grad) if parameter else f
        return fakes[id(t)]

    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = fake(p, parameter=True)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = fake(b, parameter=False)


def _storage_bytes(tensors) -> int:
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def training_step_memory(
    cfg,
    batch_size: int,
    recipe: str = "full",
    lora_rank: int = 16,
    steps: int = 2,
    fake: bool = True,
    latent_cache: bool = False,
) -> MemoryEstimate:
    """Peak bytes of `steps` training steps of the policy of `cfg` (with the `RECIPES[recipe]` overrides
    already applied by the caller) at `batch_size`.

    `fake=False` runs the same steps on real tensors on `cfg.device`, from a base with video-DiT weights:
    the check that the fake run counts what a real one allocates, and a measured step (its seconds, and on
    CUDA the allocator's peak). `latent_cache` trains on the batch's VAE latents, encoded once before the
    count starts, as `--policy.latent_cache` does (the frozen VAE never runs in the steps).
    """
    import contextlib

    from torch._subclasses.fake_tensor import FakeTensorMode

    device = torch.device("cpu" if fake else cfg.device)
    policy, inner = recipe_policy(cfg, recipe, lora_rank, load_base_transformer_weights=not fake)
    if not fake:  # a fake policy's video DiT is still on the meta device here (its fakes are made below)
        policy.to(device)
    # The prompt embeddings of the instruction, as the text encoder's cache holds them after its first call:
    # the tiny text encoder of the estimate base has not the real width, and it is frozen (not trained).
    video = inner.video
    prompt_width = video.transformer.config.crossattn_proj_in_channels
    task = "pick up the black bowl and place it on the plate"
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode:
        if fake:
            _fake_module(policy, mode)
        video._prompt_cache[task] = torch.zeros(cfg.max_prompt_tokens, prompt_width, device=device)
        b, t, h = batch_size, cfg.num_video_frames, cfg.chunk_size
        res_h, res_w = cfg.image_resolution
        batch = {c: torch.zeros(b, t, 3, res_h, res_w, device=device) for c in cfg.cameras}
        # The state as the processor gives it.
        batch["observation.state"] = torch.zeros(b, t, cfg.encoded_state_dim, device=device)
        batch["action"] = torch.zeros(b, h, cfg.action_feature.shape[0], device=device)
        batch["action_is_pad"] = torch.zeros(b, h, dtype=torch.bool, device=device)
        batch["task"] = [task] * b
        policy.train()
        groups = trained_param_groups(policy, recipe)
        preset = cfg.get_optimizer_preset()
        opt = preset.build(groups)  # lerobot-train's optimizer
        trained = [p for g in groups for p in g["params"]]
        live = LiveBytes()
        for p in trained:  # a gradient is persistent state from when it lands until zero_grad frees it
            p.register_post_accumulate_grad_hook(lambda p: live.relabel(p.grad, "grads"))
        live.track(list(policy.parameters()), list(policy.buffers()), video._prompt_cache[task])
        live.track([v for v in batch.values() if isinstance(v, torch.Tensor)])
        if latent_cache:
            from .speed import read_latents_from_memory

            read_latents_from_memory(inner, batch)
            live.track(inner._cached_latents(batch, None, cfg.training_mode)[0])
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        step_s = []
        with live:
            for i in range(steps):
                start = time.perf_counter()
                live.phase = "forward"
                loss, _ = policy.forward(batch)
                live.phase = "backward"
                loss.backward()
                del loss
                torch.nn.utils.clip_grad_norm_(trained, preset.grad_clip_norm)
                live.phase = "optimizer"
                opt.step()
                opt.zero_grad(set_to_none=True)
                if not fake:
                    if cuda:
                        torch.cuda.synchronize(device)
                    step_s.append(time.perf_counter() - start)
                    print(f"    step {i + 1}/{steps}: {step_s[-1]:.1f} s", flush=True)
        params = list(policy.parameters())
        n_trained = sum(p.numel() for p in trained)
        return MemoryEstimate(
            recipe=recipe,
            trained_params=n_trained,
            total_params=sum(p.numel() for p in params),
            weights=_storage_bytes(params),
            grads_and_adamw=n_trained * 4 * 3,  # fp32 gradient + exp_avg + exp_avg_sq per trained parameter
            activations=live.activation_peak,
            peak=live.peak,
            peak_phase=live.peak_at,
            phase_peaks=live.phase_peaks,
            step_s=step_s,
            cuda_peak=torch.cuda.max_memory_allocated(device) if cuda else None,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="libero", help="configs/<preset>.json (default: libero)")
    parser.add_argument("--batch-size", type=int, default=4, help="per-process batch (default 4)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument(
        "--latent-cache", action="store_true", help="train on cached VAE latents (--policy.latent_cache)"
    )
    parser.add_argument("--base", default=None, help="an estimate base directory (default: written now)")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="run the steps on real tensors instead (needs --base with video-DiT weights: the real model, "
        "or speed.py's random real-width base); prints the same counts, the step times, the process's peak "
        "RSS (the most of the process so far: measure one recipe per process) and, on CUDA, "
        "torch.cuda.max_memory_allocated",
    )
    parser.add_argument("--device", default="cpu", help="with --measure: cpu or cuda")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.measure and args.base is None:
        parser.error(
            "--measure needs --base: a base with video-DiT weights (the estimate base written by default "
            "holds its config only)"
        )
    if args.device != "cpu" and not args.measure:
        parser.error(f"--device={args.device}: the estimate runs on fake CPU tensors; add --measure")

    import tempfile
    from datetime import UTC, datetime

    from .machine import machine_info, peak_rss_mib

    base = args.base
    if base is None:
        # Removed when the process ends, also on an error (TemporaryDirectory's finalizer): 485 MiB.
        scratch = tempfile.TemporaryDirectory(prefix="dit4dit_estimate_base_")
        base = scratch.name
        print(f"writing an estimate base (real Wan VAE, real video-DiT config, no DiT weights) to {base}")
        write_estimate_base(base)
    rows = {}
    for recipe in args.recipes:
        start = time.perf_counter()
        tensors = f"real tensors on {args.device}" if args.measure else "fake tensors"
        print(f"[{len(rows) + 1}/{len(args.recipes)}] {recipe}: two training steps on {tensors}", flush=True)
        cfg = preset_policy_config(args.preset, base, **RECIPES[recipe], device=args.device)
        est = training_step_memory(
            cfg,
            args.batch_size,
            recipe,
            lora_rank=args.lora_rank,
            latent_cache=args.latent_cache,
            fake=not args.measure,
        )
        title = RECIPE_TITLES[recipe].format(r=args.lora_rank) + (", cached latents" * args.latent_cache)
        rows[title] = est.row()
        if args.measure:
            rows[title] |= {"step seconds": est.step_s, "process peak RSS (MiB)": peak_rss_mib()}
            if est.cuda_peak is not None:
                rows[title]["torch.cuda.max_memory_allocated (GiB)"] = est.cuda_peak / GIB
            print(f"    measured: {rows[title]}", flush=True)
        print(
            f"    {title}: trained {est.trained_params / 1e6:,.0f} M; weights {est.weights / GIB:.1f} GiB, "
            f"grads + AdamW {est.grads_and_adamw / GIB:.1f} GiB; "
            f"activations and temporaries {est.activations / GIB:.1f} GiB; "
            f"peak in forward/backward {est.forward_backward_peak / GIB:.1f} GiB, in the optimizer step "
            f"{est.phase_peaks.get('optimizer', 0) / GIB:.1f} GiB ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    out = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "latent_cache": args.latent_cache,
        "tensors": f"real, {args.device}" if args.measure else "fake",
        "recipes": rows,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
