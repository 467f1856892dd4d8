"""DiT4DiT against the official code (github Mondo-Robotics/DiT4DiT @0362b34): same weights, same inputs.

    python -m benchmarks.official_side_by_side --official-src /path/to/DiT4DiT \
        --width tiny --rounds 1 --repeats 3 --train            # CPU, seconds
    python -m benchmarks.official_side_by_side --official-src /path/to/DiT4DiT \
        --width medium --rounds 3 --repeats 5 --train --json side_by_side_medium.json
    python -m benchmarks.official_side_by_side --official-src /path/to/DiT4DiT \
        --width real --device cuda --dtype bfloat16 --resolution 224 --batch-size 8 --train
    python -m benchmarks.official_side_by_side --official-src /path/to/DiT4DiT \
        --width real --dtype bfloat16 --resolution 224 --checkpoint-dtype bfloat16 --load-only
    python -m benchmarks.official_side_by_side --official-src /path/to/DiT4DiT \
        --check-fixture                                         # the shims reproduce tests/fixtures/parity

The official code is imported from the `--official-src` checkout (nothing of it is copied here). One base with
random weights at `--width` (speed.py's tiny / medium / medium-wan / real) is written with `save_pretrained`;
the official framework is built on it from an official-style config, and its `state_dict()` is saved where the
official trainer saves it (`<run>/checkpoints/steps_0_pytorch_model.pt`, next to `<run>/config.yaml`). That
file is converted with `convert_official` into a dit4dit checkpoint, so both sides hold the same weights.

Each side then runs in a fresh child process, alternately (official, dit4dit, official, ...) `--rounds`
times, so that peak RSS (the child's own VmHWM, imports included) is per side; the official child imports
neither lerobot nor this package. In each child: load time (checkpoint files to a ready model: the official
`baseframework.from_pretrained`, ours `DiT4DiTPolicy.from_pretrained`), a first chunk on recorded random
draws (the parity check: both sides get the same feature-forward noise and the same initial action noise),
`--warmup` runs, then the median of `--repeats` new action chunks at `--batch-size` (official:
`predict_action` on an official-style example batch; ours: `reset()` + `select_action`) and, with `--train`,
of training steps (forward + backward + grad clip + AdamW step; text encoder and VAE frozen on both sides).
`--checkpoint-dtype bfloat16` stores both checkpoints in bf16 (the official `.pt` and, through the converter,
ours). `--load-only` times the load and then reads every weight each side holds once instead of acting, so
that the peak counts the pages a chunk would read (for CPUs whose bf16 matmuls make a real-width chunk take
hours); it skips the chunks and parity. `--count-flops` also counts the work of one chunk and one training
step (torch's FlopCounterMode: matmuls, convolutions, and attention on CUDA; it has no formula for the CPU
attention kernel), which tells the method's own work from overhead.

The official code needs two fixes on current libraries (diffusers 0.39, transformers 5.5); they are applied
as run-time shims, see `apply_official_shims` and tests/fixtures/parity/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

if __package__:
    from .machine import anon_rss_mib, peak_rss_mib
else:  # the official child runs this file as a script, so that it imports neither lerobot nor this package
    from machine import anon_rss_mib, peak_rss_mib

CAMERA = "observation.images.image_0"
TASK = "pick up the black bowl and place it on the plate"
# The official action-head table (ActionDiT.DiTConfig): name -> (input_embedding_dim, head_dim, heads).
OFFICIAL_DIT_TYPES = {"DiT-B": (768, 64, 12), "DiT-L": (1536, 48, 32)}
BENCH_DIT_TYPE = "DiT-bench"
RESULT_PREFIX = "SIDE_BY_SIDE_RESULT "
DEFAULT_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"


def _import_model_classes() -> None:
    """Import the diffusers / transformers classes both sides load (lazily imported modules), so that the load
    timer measures reading checkpoints, not Python imports."""
    from diffusers import (  # noqa: F401
        AutoencoderKLWan,
        Cosmos2_5_PredictBasePipeline,
        CosmosTransformer3DModel,
        UniPCMultistepScheduler,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2TokenizerFast  # noqa: F401


# ---------------------------------------------------------------------------------------------- official code
def import_official(official_src: str, dit_types: dict[str, dict] | None = None):
    """Put the official checkout on sys.path, register extra action-DiT sizes in its hard-coded table, and
    return its `baseframework` class and module namespace."""
    src = str(Path(official_src).resolve())
    if not (Path(src) / "DiT4DiT" / "model" / "framework" / "DiT4DiT.py").exists():
        raise FileNotFoundError(f"{src} is not a DiT4DiT checkout (no DiT4DiT/model/framework/DiT4DiT.py).")
    if src not in sys.path:
        sys.path.insert(0, src)
    from DiT4DiT.model.modules.action_model import ActionDiT

    # The official code maps `action_model_type` through a fixed table (DiT-B, DiT-L only); sizes other than
    # those are added to it at run time, as the parity fixture did (its `fixture.dit_type_table`).
    for name, sizes in (dit_types or {}).items():
        ActionDiT.DiTConfig.setdefault(name, dict(sizes))
    from DiT4DiT.model.framework import DiT4DiT as framework_module  # noqa: N813 (the official names)
    from DiT4DiT.model.framework import base_framework, build_framework
    from DiT4DiT.training.trainer_utils import trainer_tools

    if "DiT4DiT" not in base_framework.build_framework.__globals__["FRAMEWORK_REGISTRY"]._registry:
        raise ImportError("the official DiT4DiT framework did not register (its submodule import failed)")
    return {
        "baseframework": base_framework.baseframework,
        "build_framework": build_framework,
        "framework_module": framework_module,
        "trainer_tools": trainer_tools,
    }


def apply_official_shims(model: torch.nn.Module) -> None:
    """The two compatibility fixes the official code needs on diffusers 0.39 / transformers 5.5, applied to
    the built model, not its files (tests/fixtures/parity/README.md, "The two compatibility patches")."""
    extractor = model.backbone_interface.extractor
    # (a) diffusers >= 0.39 (PR #13664) stores `pipe.latents_std` as 1/std; the official extractor read it
    # from the pipeline and divides by it, so every latent would be off by std^2. Put back the true
    # per-channel std, built as the pinned diffusers commit built it.
    vae_config = extractor.vae.config
    extractor.latents_std = (
        torch.tensor(vae_config.latents_std).view(1, vae_config.z_dim, 1, 1, 1).float().to(extractor.device)
    )
    # (b) transformers >= 5: `apply_chat_template(..., tokenize=True)` returns a BatchEncoding, not the id
    # list the official `_get_prompt_embeds` turns into a LongTensor: hand it the input_ids.
    tokenizer = extractor.tokenizer
    template = tokenizer.apply_chat_template

    @functools.wraps(template)
    def apply_chat_template(*args, **kwargs):
        out = template(*args, **kwargs)
        return out["input_ids"] if kwargs.get("tokenize") and not isinstance(out, list | str) else out

    tokenizer.apply_chat_template = apply_chat_template


class _TorchWithMappedAutocast:
    """`torch` as the official framework module sees it, with `torch.autocast("cuda", ...)` redirected to the
    CPU (bf16 runs on a CPU only)."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def autocast(device_type: str, dtype: torch.dtype | None = None, **kwargs):
        return official_autocast(device_type, dtype, "cpu")


def official_autocast(device_type: str, dtype: torch.dtype | None, target: str | None):
    """The official `torch.autocast(device_type, dtype)` for a model on `target`: on CUDA itself; None for
    the no-op it is on a machine without a GPU. On "cpu", bf16 becomes CPU autocast, and the fp32 autocast
    around the action head (which CPU autocast does not support) becomes autocast off; the action-head shim
    casts its inputs to fp32 instead."""
    if device_type != "cuda" or target == "cuda":
        return torch.autocast(device_type, dtype=dtype)
    if target is None:
        return contextlib.nullcontext()
    if dtype == torch.float32:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cpu", dtype=dtype)


def map_official_autocast_to_cpu(model: torch.nn.Module, official: dict) -> None:
    """Run the official bf16 path on a CPU as it runs on a GPU. Its framework wraps the video backbone in
    `autocast("cuda", bf16)` and the action head in `autocast("cuda", fp32)`; on a CPU both are no-ops, and
    the bf16 features would then meet the fp32 action head (a dtype error). So the autocasts go to the CPU,
    and the action head's floating inputs are cast to fp32, which is what CUDA's fp32 autocast does for its
    fp32 weights."""
    official["framework_module"].torch = _TorchWithMappedAutocast()
    head = model.action_model

    def fp32_inputs(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            def cast(v):
                return v.float() if torch.is_tensor(v) and v.is_floating_point() else v

            return method(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})

        return wrapper

    head.forward = fp32_inputs(head.forward)
    head.predict_action = fp32_inputs(head.predict_action)


@contextlib.contextmanager
def replayed_draws(draws: list[torch.Tensor]):
    """Feed `draws`, in order, to every random draw the official forward / predict_action makes (torch.randn,
    torch.rand, torch.randn_like, diffusers' randn_tensor, Beta.sample), checking each shape; the VAE
    posterior sample of the condition becomes its mode, as in the parity fixtures (and in diffusers' own
    Cosmos pipeline). Everything is restored on exit."""
    import diffusers.utils.torch_utils as torch_utils
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    queue = list(draws)

    def take(shape, dtype=None, device=None) -> torch.Tensor:
        if not queue:
            raise RuntimeError(f"the official code made an unexpected extra random draw of shape {shape}")
        draw = queue.pop(0)
        if tuple(draw.shape) != tuple(int(s) for s in shape):
            raise RuntimeError(f"recorded draw {tuple(draw.shape)} != requested {tuple(shape)}")
        return draw.to(device=device, dtype=dtype or draw.dtype)

    def size_of(args, kwargs):
        if "size" in kwargs:
            return kwargs["size"]
        return args[0] if len(args) == 1 and isinstance(args[0], tuple | list | torch.Size) else args

    saved = (
        torch.randn,
        torch.rand,
        torch.randn_like,
        torch_utils.randn_tensor,
        torch.distributions.Beta.sample,
        DiagonalGaussianDistribution.sample,
    )
    torch.randn = lambda *a, **k: take(size_of(a, k), k.get("dtype"), k.get("device"))
    torch.rand = lambda *a, **k: take(size_of(a, k), k.get("dtype"), k.get("device"))
    torch.randn_like = lambda x, **k: take(x.shape, k.get("dtype", x.dtype), k.get("device", x.device))
    torch_utils.randn_tensor = lambda shape, generator=None, device=None, dtype=None, **k: take(
        shape, dtype, device
    )
    torch.distributions.Beta.sample = lambda self, sample_shape=(): take(
        tuple(sample_shape) + tuple(self.batch_shape)
    )
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mode()
    try:
        yield queue
    finally:
        (
            torch.randn,
            torch.rand,
            torch.randn_like,
            torch_utils.randn_tensor,
            torch.distributions.Beta.sample,
            DiagonalGaussianDistribution.sample,
        ) = saved
    if queue:
        raise RuntimeError(f"{len(queue)} recorded draws were not used by the official code")


def capture_official_features(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every call of the official backbone appends its feature tensor (the action head's `vl_embs`) here."""
    captured: list[torch.Tensor] = []
    interface = model.backbone_interface
    forward = interface.forward

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        out = forward(*args, **kwargs)
        captured.append(out.hidden_states[-1].detach().float().cpu())
        return out

    interface.forward = wrapper
    return captured


def official_examples(inputs: dict[str, torch.Tensor], tasks: list[str], train: bool) -> list[dict]:
    """The batch the official dataloader / client hands over: per sample, a list of CHW frames in [0, 1]
    (frame 0 only to act), the instruction, the zero-padded state (1, S) and, to train, the zero-padded
    action chunk with its mask of valid dims."""
    examples = []
    for b, task in enumerate(tasks):
        frames = inputs["frames"][b]
        example = {
            "image": list(frames) if train else [frames[0]],
            "lang": task,
            "state": inputs["state_padded"][b][None].numpy(),
        }
        if train:
            example["action"] = inputs["actions_padded"][b].numpy()
            example["action_mask"] = inputs["action_mask"][b].numpy()
        examples.append(example)
    return examples


def official_config(cfg, base_model: str, dtype: str, video_width: int, data_mix: str = "bench") -> dict:
    """An official (merged) config.yaml describing the benchmarked policy `cfg` (a `DiT4DiTConfig`): the
    official LIBERO yaml's keys, with the overrides every official launch script passes."""
    di = cfg.action_num_heads * cfg.action_head_dim
    sizes = (di, cfg.action_head_dim, cfg.action_num_heads)
    dit_type = next((name for name, s in OFFICIAL_DIT_TYPES.items() if s == sizes), BENCH_DIT_TYPE)
    frames, stride = cfg.num_video_frames, cfg.video_frame_stride
    h, w = cfg.image_resolution
    config = {
        "seed": 42,
        "framework": {
            "name": "DiT4DiT",
            "cosmos25": {
                "base_model": base_model,
                "extract_layer": cfg.extract_layer,
                "torch_dtype": dtype,
                "training": "joint",
                "future_loss_type": "flow_matching",
                "future_num_inference_steps": 1,
                "vl_hidden_dim": video_width,
                "conditional_frame_timestep": cfg.conditional_frame_timestep,
                "flow_matching": {
                    "time_distribution": "uniform",
                    "high_sigma_ratio": None,
                    "high_sigma_min": None,
                },
            },
            "action_model": {
                "action_model_type": dit_type,
                "hidden_size": cfg.action_hidden_size,
                "add_pos_embed": True,
                "max_seq_len": cfg.action_max_seq_len,
                "action_dim": cfg.max_action_dim,
                "state_dim": cfg.max_state_dim,
                "future_action_window_size": cfg.chunk_size - 1,
                "action_horizon": cfg.chunk_size,
                "past_action_window_size": 0,
                "noise_beta_alpha": cfg.action_beta_alpha,
                "noise_beta_beta": cfg.action_beta_beta,
                "noise_s": cfg.action_noise_s,
                "num_timestep_buckets": cfg.num_timestep_buckets,
                "num_inference_timesteps": cfg.num_inference_steps,
                "diffusion_model_cfg": {
                    "cross_attention_dim": video_width,
                    "dropout": cfg.action_dropout,
                    "final_dropout": True,
                    "interleave_self_attention": True,
                    "norm_type": "ada_norm",
                    "num_layers": cfg.action_num_layers,
                    "output_dim": cfg.action_dit_output_dim or cfg.action_hidden_size,
                    "positional_embeddings": None,
                },
            },
        },
        "datasets": {
            "vla_data": {
                "data_mix": data_mix,
                "default_image_resolution": [3, h, w],
                "image_size": [h, w],
                "video_delta_indices": list(range((frames - 1) * stride + 1)),
                "action_video_freq_ratio": stride,
                "max_state_dim": cfg.max_state_dim,
                "max_action_dim": cfg.max_action_dim,
            }
        },
        "trainer": {
            "repeated_diffusion_steps": cfg.num_action_noise_draws,
            "learning_rate": {
                "base": cfg.optimizer_lr_video,
                "backbone_interface": cfg.optimizer_lr_video,
                "action_model": cfg.optimizer_lr_action,
            },
            "freeze_modules": "backbone_interface.extractor.text_encoder,backbone_interface.extractor.vae",
            "optimizer": {
                "betas": list(cfg.optimizer_betas),
                "eps": cfg.optimizer_eps,
                "weight_decay": cfg.optimizer_weight_decay,
            },
            "max_grad_norm": cfg.optimizer_grad_clip_norm,
            "gradient_clipping": cfg.optimizer_grad_clip_norm,
        },
    }
    if dit_type == BENCH_DIT_TYPE:
        # Not an official key: the size the official table lacks (registered at run time by
        # `import_official`); `convert_official` reads the same block, as for the parity fixture.
        config["fixture"] = {
            "dit_type_table": {
                dit_type: dict(
                    zip(
                        ("input_embedding_dim", "attention_head_dim", "num_attention_heads"),
                        sizes,
                        strict=True,
                    )
                )
            }
        }
    return config


def dit_types_of(config: dict) -> dict[str, dict]:
    return config.get("fixture", {}).get("dit_type_table", {})


# ---------------------------------------------------------------------------------------------- preparation
def prepare(args, work: Path) -> dict:
    """Build the random base, the official framework on it, its checkpoint, the inputs and random draws,
    and the converted dit4dit checkpoint, under `work`. Runs in a child process (the official import sets up
    logging for the whole process)."""
    import yaml
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from lerobot_dit4dit.convert_official import convert_official
    from lerobot_dit4dit.testing.tiny_base import BENCH_BASES

    from .speed import bench_config

    bench_args = argparse.Namespace(
        base_model=None,
        revision=None,
        width=args.width,
        resolution=args.resolution,
        cameras=1,
        real_size=args.real_size,
        device="cpu",
        dtype="float32",
        scratch=str(work),  # the base lives with the checkpoints made from it (a reused work dir reads it)
    )
    cfg = bench_config(bench_args)  # builds the base with random weights at --width, in work/base
    base = Path(cfg.base_model)
    sizes = BENCH_BASES[args.width]
    video_width = sizes.num_attention_heads * sizes.attention_head_dim
    state_dim, action_dim = cfg.robot_state_feature.shape[0], cfg.action_feature.shape[0]

    run = work / "official_run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    config = official_config(cfg, str(base), args.dtype, video_width)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # The checkpoint is fp32 whatever --dtype is (the official bf16 path casts at load); the converter gets
    # this fp32 copy of the config, since it checks the frozen weights against the base in the config dtype.
    config_fp32 = json.loads(json.dumps(config))
    config_fp32["framework"]["cosmos25"]["torch_dtype"] = "float32"
    (run / "config_float32.yaml").write_text(yaml.safe_dump(config_fp32, sort_keys=False))
    # Required by the official loader (un-normalisation only, unused here): identity min/max statistics.
    ones = [1.0] * action_dim
    stats = {"action": {"min": [-1.0] * action_dim, "max": ones, "q01": [-1.0] * action_dim, "q99": ones}}
    stats["action"]["mask"] = [True] * action_dim
    (run / "dataset_statistics.json").write_text(json.dumps({"bench": stats}))

    official = import_official(args.official_src, dit_types_of(config))
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = official["build_framework"](OmegaConf.create(config_fp32))
    extractor = model.backbone_interface.extractor
    t_factor, s_factor = int(extractor.vae_scale_factor_temporal), int(extractor.vae_scale_factor_spatial)
    checkpoint = run / "checkpoints" / "steps_0_pytorch_model.pt"
    store = getattr(torch, args.checkpoint_dtype)
    state = {k: v.to(store) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, checkpoint)  # what the official trainer writes, in --checkpoint-dtype
    del state
    n_params = {
        "video DiT": sum(p.numel() for p in extractor.transformer.parameters()),
        "action head": sum(p.numel() for p in model.action_model.parameters()),
        "VAE": sum(p.numel() for p in extractor.vae.parameters()),
        "text encoder": sum(p.numel() for p in extractor.text_encoder.parameters()),
    }
    del model, extractor
    print(f"official checkpoint written in {time.perf_counter() - start:.1f} s: {checkpoint}", flush=True)

    ours = work / "dit4dit"
    convert_official(
        str(checkpoint),
        run / "config_float32.yaml",
        ours,
        base_model=str(base),
        cameras=[CAMERA],
        state_dim=state_dim,
        action_dim=action_dim,
        state_encoding="none",
        gripper_dim=None,
        checkpoint_dtype=args.checkpoint_dtype,
    )
    print(f"converted to {ours}", flush=True)

    # Inputs (frames k/255 in [0, 1]; state and actions fp16-representable, as the official dataloader
    # hands them over) and the random draws of one chunk, shared by both sides.
    g = torch.Generator().manual_seed(args.seed)
    b, t, (h, w), chunk = args.batch_size, cfg.num_video_frames, cfg.image_resolution, cfg.chunk_size
    frames = torch.randint(0, 256, (b, t, 3, h, w), generator=g).float() / 255
    state = torch.randn(b, state_dim, generator=g).half().float()
    actions = (torch.rand(b, chunk, action_dim, generator=g) * 2 - 1).half().float()
    latent_frames = (t - 1) // t_factor + 1
    inputs = {
        "frames": frames,
        "state": state,
        "state_padded": torch.nn.functional.pad(state, (0, cfg.max_state_dim - state_dim)),
        "actions": actions,
        "actions_padded": torch.nn.functional.pad(actions, (0, cfg.max_action_dim - action_dim)),
        "action_mask": torch.arange(cfg.max_action_dim).expand(b, chunk, -1) < action_dim,
        "noise.feature": torch.randn(b, 16, latent_frames, h // s_factor, w // s_factor, generator=g),
        "noise.action": torch.randn(b, chunk, cfg.max_action_dim, generator=g),
    }
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(work / "inputs.safetensors"))
    meta = {
        "base_model": str(base),
        "width": args.width,
        "base_sizes": asdict(sizes),
        "parameters": n_params,
        "official_checkpoint": str(checkpoint),
        "official_action_model_type": config["framework"]["action_model"]["action_model_type"],
        "dit4dit_checkpoint": str(ours),
        "extract_layer": cfg.extract_layer,
        "video_frames": t,
        "resolution": [h, w],
        "chunk_size": chunk,
        "state_dim": state_dim,
        "action_dim": action_dim,
        "action_head": {
            "layers": cfg.action_num_layers,
            "heads": cfg.action_num_heads,
            "head_dim": cfg.action_head_dim,
            "hidden_size": cfg.action_hidden_size,
        },
        "tasks": [TASK] * b,
        "feature_noise_shape": list(inputs["noise.feature"].shape),
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


# ---------------------------------------------------------------------------------------------- the children
def _timed(fn, warmup: int, repeats: int, sync) -> list[float]:
    """Seconds of `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _counted_gflop(fn) -> float:
    """GFLOP of one call of `fn` as torch's FlopCounterMode counts them: matmuls, convolutions and (CUDA
    kernels only) attention, forward and, for a training step, backward; elementwise work is not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def _child_setup(args, work: Path):
    """What both children start with: the shared inputs and draws, the device, a device sync, and the model
    classes imported (so that the load timer measures reading checkpoints, not imports)."""
    from safetensors.torch import load_file

    inputs = load_file(str(work / "inputs.safetensors"))
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    _import_model_classes()
    return inputs, device, sync


def read_every_weight(model: torch.nn.Module) -> None:
    """Read each parameter and buffer `model` holds once (pages mapped from a file become resident, as the
    first chunk would make them), without an fp32 copy of any."""
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.sum(dtype=torch.float32 if t.is_floating_point() else None)


def _load_only(out: dict, model: torch.nn.Module) -> dict:
    """`--load-only`: the memory figures after reading every weight, in place of the chunks."""
    out["anon_after_load_mib"] = anon_rss_mib()
    read_every_weight(model)
    out["rss_after_reading_weights_mib"] = peak_rss_mib()
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run_official(args, work: Path, meta: dict) -> dict:
    """Load the official checkpoint with the official loader and time it (this process runs nothing else)."""
    import yaml

    config = yaml.safe_load((work / "official_run" / "config.yaml").read_text())
    official = import_official(args.official_src, dit_types_of(config))
    inputs, device, sync = _child_setup(args, work)
    out: dict = {"rss_before_load_mib": peak_rss_mib()}
    start = time.perf_counter()
    model = official["baseframework"].from_pretrained(meta["official_checkpoint"])
    apply_official_shims(model)
    model = model.to(device).eval()  # as the official server does
    sync()
    out["load_s"] = time.perf_counter() - start
    out["rss_after_load_mib"] = peak_rss_mib()
    if args.load_only:
        return _load_only(out, model)
    if device.type == "cpu" and args.dtype != "float32":
        map_official_autocast_to_cpu(model, official)
    features = capture_official_features(model)
    act = official_examples(inputs, meta["tasks"], train=False)

    start = time.perf_counter()
    with replayed_draws([inputs["noise.feature"], inputs["noise.action"]]):
        chunk = torch.from_numpy(model.predict_action(act)["normalized_actions"])
    sync()
    out["first_chunk_s"] = time.perf_counter() - start
    _write_parity(work, "official", chunk[..., : meta["action_dim"]], features[0])

    out["chunk_s"] = _timed(lambda: model.predict_action(act), args.warmup, args.repeats, sync)
    if args.count_flops:
        out["chunk_gflop"] = _counted_gflop(lambda: model.predict_action(act))
    out["rss_after_chunks_mib"] = peak_rss_mib()
    if args.train:
        cfg = model.config
        tools = official["trainer_tools"]
        model.train()
        tools.TrainerUtils.freeze_backbones(model, freeze_modules=cfg.trainer.freeze_modules)
        optimizer = torch.optim.AdamW(  # the official setup_optimizer_and_scheduler, without the LR schedule
            tools.build_param_lr_groups(model=model, cfg=cfg),
            lr=cfg.trainer.learning_rate.base,
            betas=tuple(cfg.trainer.optimizer.betas),
            weight_decay=cfg.trainer.optimizer.weight_decay,
            eps=cfg.trainer.optimizer.eps,
        )
        batch = official_examples(inputs, meta["tasks"], train=True)

        def train_step():  # the official VLATrainer._train_step, without DeepSpeed
            with torch.enable_grad(), official_autocast("cuda", torch.bfloat16, _autocast_device(args)):
                losses = model.forward(batch)
                loss = losses["action_loss"] + losses["future_video_loss"]
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clipping)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        out["train_step_s"] = _timed(train_step, args.warmup, args.repeats, sync)
        if args.count_flops:
            out["train_step_gflop"] = _counted_gflop(train_step)
    out["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _autocast_device(args) -> str | None:
    """Where the official trainer's `autocast("cuda", bf16)` applies: CUDA, or (emulated) the CPU for a bf16
    run; for a float32 CPU run it is the no-op it is on a machine without a GPU (None)."""
    if args.device.startswith("cuda"):
        return "cuda"
    return "cpu" if args.dtype != "float32" else None


def run_dit4dit(args, work: Path, meta: dict) -> dict:
    """Load the converted checkpoint with `DiT4DiTPolicy.from_pretrained` and time it."""

    from lerobot_dit4dit.configuration_dit4dit import DTYPES, DiT4DiTConfig
    from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy

    inputs, device, sync = _child_setup(args, work)
    out: dict = {"rss_before_load_mib": peak_rss_mib()}
    ckpt = meta["dit4dit_checkpoint"]
    start = time.perf_counter()
    config = DiT4DiTConfig.from_pretrained(ckpt)
    config.device = args.device
    config.dtype = args.dtype
    # What `convert_official` sets for an official config in a reduced dtype (the official code rounds the
    # feature sigma to its bf16 DiT dtype).
    config.cast_feature_sigma_to_model_dtype = args.dtype != "float32"
    policy = DiT4DiTPolicy.from_pretrained(ckpt, config=config)
    policy.eval()
    sync()
    out["load_s"] = time.perf_counter() - start
    out["rss_after_load_mib"] = peak_rss_mib()
    if args.load_only:
        return _load_only(out, policy)

    features: list[torch.Tensor] = []
    extract = policy.extract_features

    def capture(*a, **k):
        result = extract(*a, **k)
        features.append(result.detach().float().cpu())
        return result

    policy.extract_features = capture
    tasks = meta["tasks"]
    frames = inputs["frames"].to(device) * 2 - 1  # what the preprocessor does to [0, 1] frames
    obs = {CAMERA: frames[:, 0], "observation.state": inputs["state"].to(device), "task": tasks}
    start = time.perf_counter()
    chunk = policy.predict_action_chunk(
        obs,
        noise=inputs["noise.action"].to(device),
        feature_noise=inputs["noise.feature"].to(device),
    )
    sync()
    out["first_chunk_s"] = time.perf_counter() - start
    _write_parity(work, "dit4dit", chunk.float().cpu(), features[0])
    policy.extract_features = extract

    def new_chunk():
        policy.reset()
        policy.select_action(obs)

    out["chunk_s"] = _timed(new_chunk, args.warmup, args.repeats, sync)
    if args.count_flops:
        out["chunk_gflop"] = _counted_gflop(new_chunk)
    out["rss_after_chunks_mib"] = peak_rss_mib()
    if args.train:
        cfg = policy.config
        policy.train()  # reads the deferred blocks (and, loaded in bf16, the fp32 weights) back first
        optimizer = cfg.get_optimizer_preset().build(policy.get_optim_params())  # as lerobot-train builds it
        b, h = frames.shape[0], meta["chunk_size"]
        batch = {
            CAMERA: frames,
            "observation.state": inputs["state"].to(device)[:, None],
            "action": inputs["actions"].to(device),
            "action_is_pad": torch.zeros(b, h, dtype=torch.bool, device=device),
            "task": tasks,
        }
        dtype = DTYPES[cfg.dtype]
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

        def train_step():  # as lerobot-train's update_policy: autocast forward, backward, clip, step
            with autocast:
                loss, _ = policy.forward(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.optimizer_grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        out["train_step_s"] = _timed(train_step, args.warmup, args.repeats, sync)
        if args.count_flops:
            out["train_step_gflop"] = _counted_gflop(train_step)
        if args.latent_cache:  # the same step reading the clip's VAE latents (`--policy.latent_cache`)
            from .speed import read_latents_from_memory

            read_latents_from_memory(policy, batch)
            out["train_step_latent_cache_s"] = _timed(train_step, args.warmup, args.repeats, sync)
            if args.count_flops:
                out["train_step_latent_cache_gflop"] = _counted_gflop(train_step)
    out["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _write_parity(work: Path, side: str, chunk: torch.Tensor, features: torch.Tensor) -> None:
    from safetensors.torch import save_file

    tensors = {"actions": chunk.float().contiguous(), "features": features.float().contiguous()}
    save_file(tensors, str(work / f"parity_{side}.safetensors"))


def check_fixture(official_src: str, fixtures: Path) -> dict[str, float]:
    """Run the official code (+ the shims) on the parity fixture's checkpoint, inputs and recorded draws;
    return max |diff| against the recorded official outputs for the features, losses and actions."""
    import yaml
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    config = yaml.safe_load((fixtures / "official_config.yaml").read_text())
    official = import_official(official_src, dit_types_of(config))
    config["framework"]["cosmos25"]["base_model"] = str(
        fixtures / config["framework"]["cosmos25"]["base_model"]
    )
    model = official["build_framework"](OmegaConf.create(config))
    apply_official_shims(model)
    model.load_state_dict(load_file(str(fixtures / "official_model.safetensors")), strict=True)
    model.eval()  # dropout off, as the fixtures were made
    features = capture_official_features(model)
    raw = load_file(str(fixtures / "inputs.safetensors"))
    noise = load_file(str(fixtures / "noise.safetensors"))
    expected = load_file(str(fixtures / "outputs.safetensors"))
    tasks = json.loads((fixtures / "inputs.json").read_text())["instructions"]
    inputs = {
        "frames": raw["frames"],
        "state_padded": raw["state"][:, 0],
        "actions_padded": raw["actions"],
        "action_mask": raw["action_mask"],
    }
    train_draws = [
        "train.feature.init_latents",
        "train.video_fm.t_uniform",
        "train.video_fm.z",
        "train.video_fm.xt_filler",
        "train.action_fm.eps",
        "train.action_fm.beta_sample",
    ]
    with replayed_draws([noise[k] for k in train_draws]):
        losses = model.forward(official_examples(inputs, tasks, train=True))
    with replayed_draws([noise["predict.feature.init_latents"], noise["predict.action.init_noise"]]):
        actions = model.predict_action(official_examples(inputs, tasks, train=False))["normalized_actions"]
    got = {
        "train.feature.block_features": features[0],
        "train.video_fm.loss": losses["future_video_loss"].detach(),
        "train.action_fm.loss": losses["action_loss"].detach(),
        "predict.feature.block_features": features[1],
        "predict.action.actions": torch.from_numpy(actions),
    }
    return {k: (v.float().cpu() - expected[k].float()).abs().max().item() for k, v in got.items()}


# ---------------------------------------------------------------------------------------------- the parent
def _child(args, extra: list[str]) -> tuple[dict, str]:
    """Run this module in a fresh process with the hidden flags `extra`; return its result and stdout. The
    official child runs this file as a script, so that it imports neither lerobot nor lerobot_dit4dit
    (about 200 MiB of RSS that would be charged to the official side)."""
    official = "--child=official" in extra
    cmd = [sys.executable, *([__file__] if official else ["-m", __spec__.name]), *extra]
    cmd += [f"--official-src={args.official_src}", f"--threads={args.threads}", f"--device={args.device}"]
    cmd += [f"--dtype={args.dtype}", f"--warmup={args.warmup}", f"--repeats={args.repeats}"]
    cmd += [f"--width={args.width}", f"--resolution={args.resolution}", f"--batch-size={args.batch_size}"]
    cmd += (
        [f"--seed={args.seed}"]
        + (["--train"] if args.train else [])
        + (["--latent-cache"] if args.latent_cache else [])
        + (["--count-flops"] if args.count_flops else [])
        + (["--real-size"] if args.real_size else [])
        + [f"--checkpoint-dtype={args.checkpoint_dtype}"]
        + (["--load-only"] if args.load_only else [])
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"child {' '.join(extra)} failed with exit code {proc.returncode}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX) :]), proc.stdout


def _parity(work: Path) -> dict[str, float]:
    from safetensors.torch import load_file

    a, b = (
        load_file(str(work / "parity_official.safetensors")),
        load_file(str(work / "parity_dit4dit.safetensors")),
    )
    return {k: (a[k] - b[k]).abs().max().item() for k in ("actions", "features")} | {
        "actions_max_abs": a["actions"].abs().max().item()
    }


def _summary(runs: dict[str, list[dict]]) -> list[tuple[str, str, float | None, float | None]]:
    """Table rows (name, unit, official, dit4dit): medians over rounds; timings per round are medians."""

    def med(side: str, key: str, scale: float = 1.0) -> float | None:
        values = [
            statistics.median(r[key]) if isinstance(r[key], list) else r[key] for r in runs[side] if key in r
        ]
        return statistics.median(values) * scale if values else None

    rows = [
        ("load (checkpoint files -> ready model)", "s", "load_s", 1.0),
        ("first chunk (recorded draws, lazy loads)", "s", "first_chunk_s", 1.0),
        ("new action chunk, median", "ms", "chunk_s", 1000.0),
        ("train step, median", "ms", "train_step_s", 1000.0),
        # dit4dit's step on cached VAE latents against the official step (which has no such cache)
        ("train step, dit4dit on cached latents", "ms", "train_step_latent_cache_s", 1000.0),
        ("work counted in one new action chunk", "GFLOP", "chunk_gflop", 1.0),
        ("work counted in one train step", "GFLOP", "train_step_gflop", 1.0),
        ("work counted, dit4dit on cached latents", "GFLOP", "train_step_latent_cache_gflop", 1.0),
        ("peak RSS before load (imports)", "MiB", "rss_before_load_mib", 1.0),
        ("peak RSS after load", "MiB", "rss_after_load_mib", 1.0),
        ("anonymous memory after load (not file-mapped)", "MiB", "anon_after_load_mib", 1.0),
        ("peak RSS after reading every weight once", "MiB", "rss_after_reading_weights_mib", 1.0),
        ("peak RSS after chunks", "MiB", "rss_after_chunks_mib", 1.0),
        ("peak RSS of the child", "MiB", "peak_rss_mib", 1.0),
        ("CUDA peak allocated", "MiB", "cuda_peak_mib", 1.0),
    ]
    official_key = {
        "train_step_latent_cache_s": "train_step_s",
        "train_step_latent_cache_gflop": "train_step_gflop",
    }
    return [
        (name, unit, med("official", official_key.get(key, key), scale), med("dit4dit", key, scale))
        for name, unit, key, scale in rows
        if med("dit4dit", key) is not None or (key not in official_key and med("official", key) is not None)
    ]


def print_report(args, meta: dict, runs: dict[str, list[dict]], parity: dict | None) -> list[tuple]:
    """Print the parity figures (None with --load-only) and the table; return the table rows."""
    print()
    if parity is None:
        print("--load-only: no chunk, no parity (both sides load the same weights)")
    else:
        _print_parity(args, meta, parity)
    rows = _summary(runs)
    return _print_table(args, meta, runs, rows)


def _print_parity(args, meta: dict, parity: dict[str, float]) -> None:
    print(
        f"parity: same weights and inputs, same feature noise {meta['feature_noise_shape']} and initial "
        "action noise (for this one chunk the official VAE posterior sample is replaced by its mode, as ours "
        "uses)"
    )
    print(
        f"  first action chunk ({args.batch_size}, {meta['chunk_size']}, {meta['action_dim']}): "
        f"max |official - dit4dit| = {parity['actions']:.3e} (max |action| {parity['actions_max_abs']:.2f})"
    )
    print(
        f"  features (output of video DiT block {meta['extract_layer']}, the action head's input): "
        f"max |diff| = {parity['features']:.3e}"
    )
    if args.dtype != "float32":
        print("  (bf16: ours runs the action head in bf16 at inference, the official code keeps it in fp32)")


def _print_table(args, meta: dict, runs: dict[str, list[dict]], rows: list[tuple]) -> list[tuple]:
    print()
    print(
        f"{args.width} width, {args.dtype}, batch {args.batch_size}, {meta['resolution'][0]}px, "
        f"{torch.get_num_threads()} thread(s), {args.device}, {args.rounds} round(s) x {args.repeats} repeats"
    )
    print(f"{'measurement':52s} {'official':>12s} {'dit4dit':>12s} {'ratio':>8s}")
    for name, unit, off, ours in rows:
        cells = [("" if v is None else f"{v:.3f}" if unit == "s" else f"{v:.1f}") for v in (off, ours)]
        ratio = f"{ours / off:.2f}" if ours is not None and off else ""
        print(f"{f'{name} ({unit})':52s} {cells[0]:>12s} {cells[1]:>12s} {ratio:>8s}")
    notes = [
        "ratio = dit4dit / official (< 1: dit4dit faster or leaner). The instruction repeats, as in a",
        "rollout: dit4dit caches its prompt embedding and reads its text encoder lazily (in 'first chunk');",
        "the official code runs the text encoder every chunk and loads the whole pipeline (every block, the",
        "VAE decoder) up front.",
    ]
    if args.dtype != "float32" and args.device == "cpu":
        notes.append("official bf16 on a CPU: its autocast('cuda', ...) regions run on the CPU instead")
        notes.append("(map_official_autocast_to_cpu).")
    if args.train:
        notes.append(
            "official train step: its trainer's step (autocast, backward, clip, AdamW) without DeepSpeed,"
        )
        notes.append(
            "so with --dtype bfloat16 AdamW updates its bf16 video DiT directly (no fp32 master weights)."
        )
    if args.device.startswith("cuda") and args.dtype == "float32":
        notes.append(
            "on CUDA the official code autocasts its video backbone to bf16 even with torch_dtype float32."
        )
    print("\n".join(notes))
    return rows


def main() -> None:
    if __package__:
        from lerobot_dit4dit.testing.tiny_base import BENCH_BASES, BENCH_WIDTH_HELP

        widths, width_help = list(BENCH_BASES), f"speed.py's {BENCH_WIDTH_HELP}"
    else:  # the official child runs this file as a script: it imports nothing of this package
        widths, width_help = None, "the parent's --width"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official-src", required=True, help="checkout of github Mondo-Robotics/DiT4DiT")
    parser.add_argument(
        "--width",
        choices=widths,
        default="tiny",
        help=width_help,
    )
    parser.add_argument(
        "--real-size", action="store_true", help="the real-size action head (DiT-B, 16 layers)"
    )
    parser.add_argument("--resolution", type=int, default=64, help="square camera image (multiple of 16)")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="batch of the action chunk and the train step"
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", action="store_true", help="also time a training step")
    parser.add_argument(
        "--checkpoint-dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="dtype both checkpoints are stored in (ours: the converter's --checkpoint-dtype)",
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="time the load and read every weight once instead of acting (no chunks, no parity)",
    )
    parser.add_argument(
        "--latent-cache",
        action="store_true",
        help="with --train, also time dit4dit's step reading the clip's VAE latents (--policy.latent_cache)",
    )
    parser.add_argument(
        "--count-flops",
        action="store_true",
        help="also count the work (GFLOP) of one chunk and one train step with torch's FlopCounterMode",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads, pinned (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per side, run alternately")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the official init, inputs and draws")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where the base and checkpoints go, kept for reuse (default: a temp dir, removed at the end)",
    )
    parser.add_argument("--json", default=None, help="also write the figures and the machine here")
    parser.add_argument(
        "--check-fixture",
        action="store_true",
        help="only check that the official code + shims reproduce the parity fixture's outputs",
    )
    parser.add_argument("--fixtures", default=str(DEFAULT_FIXTURES), help="parity fixture folder")
    parser.add_argument("--prepare", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, choices=("official", "dit4dit"), help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.check_fixture:
        diffs = check_fixture(args.official_src, Path(args.fixtures))
        print(f"official code at {args.official_src} + shims vs {args.fixtures}/outputs.safetensors:")
        for name, diff in diffs.items():
            print(f"  {name:34s} max |diff| {diff:.3e}")
        return
    if args.prepare:
        print(RESULT_PREFIX + json.dumps(prepare(args, Path(args.prepare))))
        return
    if args.child:
        work = Path(args.work)
        meta = json.loads((work / "meta.json").read_text())
        result = (run_official if args.child == "official" else run_dit4dit)(args, work, meta)
        result["threads"] = torch.get_num_threads()
        result["imports_lerobot"] = "lerobot" in sys.modules
        print(RESULT_PREFIX + json.dumps(result))
        return

    load = os.getloadavg()[0]
    print(f"torch threads: {torch.get_num_threads()} (pinned); 1-min load average before the run: {load:.2f}")
    if load >= 1.0:
        print("warning: other work is running on this machine; timings will be inflated")
    if args.work_dir is None:  # a temporary work dir (26 GiB at real width) is removed at the end
        with tempfile.TemporaryDirectory(prefix="dit4dit_side_by_side_") as work:
            _compare(args, Path(work), load)
    else:
        _compare(args, Path(args.work_dir), load)


def _compare(args, work: Path, load: float) -> None:
    """Prepare `work` (or reuse it), run the children alternately, print the report and write the JSON."""
    from lerobot_dit4dit.testing.tiny_base import BENCH_BASES

    from .machine import machine_info

    work.mkdir(parents=True, exist_ok=True)
    print(
        f"preparing the {args.width} base, the official checkpoint and its conversion in {work}", flush=True
    )
    # A work dir prepared with the same settings is reused (at real width the preparation writes ~26 GiB).
    keys = ("width", "real_size", "resolution", "batch_size", "seed", "dtype", "checkpoint_dtype")
    stamp = {k: getattr(args, k) for k in keys}
    stamp["official_src"] = str(Path(args.official_src).resolve())
    stamp["base_sizes"] = repr(BENCH_BASES[args.width])  # a base built by other sizes is not reused
    stamp_file = work / "prepared_with.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        meta = json.loads((work / "meta.json").read_text())
        print("reusing that preparation (same settings)")
    else:
        stamp_file.unlink(missing_ok=True)
        meta, _ = _child(args, [f"--prepare={work}"])
        stamp_file.write_text(json.dumps(stamp))
    print(f"official action_model_type {meta['official_action_model_type']}; parameters {meta['parameters']}")

    runs: dict[str, list[dict]] = {"official": [], "dit4dit": []}
    parity: list[dict[str, float]] = []
    for i in range(args.rounds):
        for side in runs:  # alternately, each in a fresh process
            result, _ = _child(args, [f"--child={side}", f"--work={work}"])
            runs[side].append(result)
            chunk = "" if args.load_only else f", chunk {statistics.median(result['chunk_s']) * 1000:.1f} ms"
            print(
                f"[{i + 1}/{args.rounds}] {side:8s} load {result['load_s']:.2f} s{chunk}, "
                f"peak RSS {result['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        if not args.load_only:
            parity.append(_parity(work))
    worst = {k: max(p[k] for p in parity) for k in parity[0]} if parity else None
    rows = print_report(args, meta, runs, worst)

    if args.json:
        config = {
            k: meta[k] for k in ("base_sizes", "parameters", "action_head", "official_action_model_type")
        }
        config |= {k: meta[k] for k in ("extract_layer", "resolution", "video_frames", "chunk_size")}
        config |= {
            "width": args.width,
            "dtype": args.dtype,
            "device": args.device,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "rounds": args.rounds,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "train": args.train,
            "latent_cache": args.latent_cache,
            "count_flops": args.count_flops,
            "checkpoint_dtype": args.checkpoint_dtype,
            "load_only": args.load_only,
        }
        out = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "load_average_1min_before": load,
            "official_src": str(Path(args.official_src).resolve()),
            "config": config,
            "parity": {
                "compared": "first action chunk and block features",
                "max": worst,
                "per_round": parity,
            },
            "summary": [
                {
                    "measurement": n,
                    "unit": u,
                    "official": o,
                    "dit4dit": d,
                    "ratio": d / o if o and d else None,
                }
                for n, u, o, d in rows
            ],
            "raw": runs,  # per child: seconds of every timed call, RSS figures
        }
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
