"""Print DiT4DiT figures: parameter counts of the real-size model, and train-step / select_action timings.

    python -m benchmarks.speed --param-counts     # real-size, meta device, no weights
                                                                  # (+ shipped text conditioning sizes)
    python -m benchmarks.speed                    # tiny base built offline, CPU
    python -m benchmarks.speed --width medium --real-size --batch-size 4 --json m.json
    python -m benchmarks.speed --base-model nvidia/Cosmos-Predict2.5-2B --device cuda \
        --dtype bfloat16 --real-size --resolution 224 --batch-size 8   # on a GPU with the real weights

Timings are medians over `--repeats` runs after `--warmup` runs. Peak memory is the process's max RSS on
CPU and `torch.cuda.max_memory_allocated` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lerobot_dit4dit import fast_paths
from lerobot_dit4dit.configuration_dit4dit import DTYPES
from lerobot_dit4dit.inputs import padded_state, tile_cameras

from .common import (
    REAL_TEXT,
    REAL_TRANSFORMER,
    REAL_VAE,
    RECIPES,
    recipe_policy,
    trained_param_groups,
)
from .machine import peak_rss_mib


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def real_param_counts() -> dict[str, int]:
    """Parameter counts of the real-size DiT4DiT (LIBERO head: state 16, action 8) on the meta device."""
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from lerobot_dit4dit.action_head import FlowMatchingActionHead
    from lerobot_dit4dit.configuration_dit4dit import DiT4DiTConfig

    cfg = DiT4DiTConfig(device="cpu")
    with torch.device("meta"):
        transformer = CosmosTransformer3DModel(**REAL_TRANSFORMER)
        width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
        head = FlowMatchingActionHead.from_config(cfg, cross_attention_dim=width)
        vae = AutoencoderKLWan(**REAL_VAE)
        text = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**REAL_TEXT))
    counts = {
        "video DiT (trained)": _count(transformer),
        "action DiT head (trained)": _count(head),
        "Wan VAE (frozen)": _count(vae),
        "Qwen2.5-VL text encoder (frozen)": _count(text),
    }
    counts["trained total (model.safetensors)"] = (
        counts["video DiT (trained)"] + counts["action DiT head (trained)"]
    )
    return counts


def real_text_conditioning_bytes(num_instructions: int = 40, max_prompt_tokens: int = 512) -> dict[str, int]:
    """Bytes (bf16) of shipped text conditioning at real width, from shapes on the meta device: the projected
    context `text_conditioning` stores, against the raw prompt embeddings it replaces."""
    from diffusers import CosmosTransformer3DModel

    with torch.device("meta"):
        transformer = CosmosTransformer3DModel(**REAL_TRANSFORMER)
        raw = torch.empty(1, max_prompt_tokens, REAL_TRANSFORMER["crossattn_proj_in_channels"])
        projected = transformer.crossattn_proj(raw)
    per_projected = projected[0].numel() * 2
    return {
        "projected context per instruction (bf16)": per_projected,
        "raw prompt embeddings per instruction (bf16)": raw[0].numel() * 2,
        f"projected context, {num_instructions} instructions (LIBERO)": num_instructions * per_projected,
    }


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()  # not ru_maxrss: a --load child would start with its parent's high-water mark


def bench_config(args):
    """The benchmarked policy's config: `--base-model`, or a base with random weights built at `--width` in
    `args.scratch/base` (the caller's directory, which it removes)."""
    from lerobot.configs import FeatureType, PolicyFeature

    from lerobot_dit4dit.configuration_dit4dit import DiT4DiTConfig
    from lerobot_dit4dit.testing.tiny_base import (
        BENCH_BASES,
        TINY_POLICY_OVERRIDES,
        build_tiny_cosmos_base,
    )

    base = args.base_model
    if base is None:
        sizes = BENCH_BASES[args.width]
        print(f"building a {args.width}-width base with random weights ({sizes})", flush=True)
        base = str(build_tiny_cosmos_base(Path(args.scratch) / "base", sizes))
    res = args.resolution
    cams = [f"observation.images.cam{i}" for i in range(args.cameras)]
    overrides = {} if args.real_size else dict(TINY_POLICY_OVERRIDES)
    if args.base_model is None and args.width != "tiny":
        overrides["extract_layer"] = 17 if args.width == "real" else 6  # medium: 6 of 8 blocks
    cfg = DiT4DiTConfig(
        **overrides,
        base_model=base,
        base_model_revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        compile_model=getattr(args, "compile", False),
        **(RECIPES[args.recipe] if getattr(args, "recipe", None) else {}),
        image_resolution=(res, res),
        input_features={
            **{c: PolicyFeature(FeatureType.VISUAL, (3, res, res)) for c in cams},
            "observation.state": PolicyFeature(FeatureType.STATE, (8,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))},
    )
    return cfg


def random_observation(cfg, batch_size: int = 1) -> dict:
    """One observation of the config's cameras and state, with random pixels, for acting."""
    res = cfg.image_resolution[0]
    obs = {c: torch.rand(batch_size, 3, res, res) * 2 - 1 for c in cfg.image_features}
    obs["observation.state"] = torch.randn(batch_size, cfg.robot_state_feature.shape[0])
    obs["task"] = ["pick up the black bowl and place it on the plate"] * batch_size
    return obs


def time_load(args) -> dict:
    """Save a checkpoint of the benchmarked policy (in `--checkpoint-dtype`), then load it and act twice in
    fresh processes, alternating the lean load (the default: blocks after `extract_layer` and the VAE decoder
    left unread, the weights mapped from the file when it stores them in `--dtype`) with a full one
    (`defer_unused_blocks=false`, the whole VAE) and a copying one (`map_weights=false`). Each child reports
    its load time, first and second chunk and peak RSS, so the figures are the load's alone."""
    import subprocess
    import sys

    from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy

    cfg = bench_config(args)
    ckpt = Path(args.scratch) / "pretrained_model"
    print(f"saving a checkpoint of the policy to {ckpt} in {args.checkpoint_dtype}", flush=True)
    cfg.checkpoint_dtype = args.checkpoint_dtype
    DiT4DiTPolicy(cfg).save_pretrained(ckpt)
    runs: dict[str, list[dict]] = {"full": [], "lean": [], "copied": []}
    for i in range(args.repeats):
        for mode in runs:
            cmd = [
                sys.executable,
                "-m",
                __spec__.name,
                "--load-child",
                str(ckpt),
                f"--threads={args.threads}",
            ]
            cmd += [f"--load-mode={mode}"]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
            runs[mode].append(json.loads(line))
            print(f"[{i + 1}/{args.repeats}] {mode}: {runs[mode][-1]}", flush=True)
    results = {
        f"{mode}_{key}": statistics.median(r[key] for r in rows)
        for mode, rows in runs.items()
        for key in rows[0]
    }
    return {
        "base_model": cfg.base_model,
        "config": {"dtype": cfg.dtype, "checkpoint_dtype": cfg.checkpoint_dtype, "checkpoint": str(ckpt)},
        "results": results,
    }


def load_child(ckpt: str, mode: str) -> dict:
    """In this (fresh) process: `from_pretrained` the checkpoint (`mode`: lean, full or copied) and act twice
    (a new chunk each); time each, report peak RSS."""
    from lerobot_dit4dit.configuration_dit4dit import DiT4DiTConfig
    from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy

    config = DiT4DiTConfig.from_pretrained(ckpt)
    if mode == "full":  # the "before": every block, and the pipeline's whole VAE
        config.defer_unused_blocks = config.defer_vae_decoder = False
    config.map_weights = mode != "copied"
    start = time.perf_counter()
    policy = DiT4DiTPolicy.from_pretrained(ckpt, config=config)
    load_s = time.perf_counter() - start
    policy.eval()
    obs = random_observation(policy.config)
    autocast = torch.autocast("cpu", dtype=DTYPES[config.dtype], enabled=config.dtype != "float32")
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        policy.select_action(obs)
    first_ms = (time.perf_counter() - start) * 1000
    policy.reset()
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        policy.select_action(obs)
    return {
        "load_s": load_s,
        "first_chunk_ms": first_ms,
        "second_chunk_ms": (time.perf_counter() - start) * 1000,
        "peak_rss_mib": _peak_memory_mb(torch.device("cpu")),
        "unread_blocks_after_acting": policy.deferred_blocks,
        "vae_decoder_read": int(policy.video.vae_decoder_loaded),
    }


def read_latents_from_memory(policy, batch: dict) -> None:
    """What `--policy.latent_cache` saves a training step: encode `batch`'s clips once, and from then on the
    policy reads those latents instead of running the frozen VAE (the file lookup of `LatentCache` is left
    out). Every later training batch must be this one."""
    with torch.no_grad():
        video = tile_cameras(batch, policy.config, train=True)
        latents = policy.video.encode_video(video)  # (B, 16, T_lat, h, w)
    policy.config.latent_cache = "<in memory>"
    # (latents, future-frame mask): no clip of this batch runs past an episode end.
    policy._cached_latents = lambda _batch, _device, mode: (
        latents if mode != "action" else latents[:, :, :1],
        None,
    )


# Each legacy "before" flag of this benchmark -> the fast paths it switches off.
BEFORE_FLAGS = {
    "no_caches": ("text_kv_cache", "action_kv_cache"),
    "no_cast": ("inference_cast",),
    "no_per_frame_adaln": ("per_frame_adaln",),
    "no_fast_norms": ("fast_rms_norm",),
    "no_instruction_gather": ("instruction_gather",),
}


def disabled_fast_paths(args) -> set[str]:
    """The fast paths `--disable` and the legacy `--no-*` flags switch off."""
    off = set(getattr(args, "disable", None) or ())
    for flag, names in BEFORE_FLAGS.items():
        if getattr(args, flag, False):
            off.update(names)
    return off


def time_policy(args) -> dict:
    """Time a train step, a new action chunk and each inference stage; return the figures (also printed)."""

    from lerobot_dit4dit.modeling_dit4dit import DiT4DiTPolicy

    # Every "before" is a switch of the speed layer (`lerobot_dit4dit.fast_paths`), set for this process and
    # the children it starts.
    off = disabled_fast_paths(args)
    os.environ[fast_paths.DISABLE_ENV] = ",".join(sorted(off | fast_paths.disabled_by_env()))
    cfg = bench_config(args)
    base, res, cams = cfg.base_model, cfg.image_resolution[0], list(cfg.image_features)
    device = torch.device(cfg.device)
    if args.recipe:  # as lerobot-train trains that recipe; `policy` is the DiT4DiTPolicy inside `wrapped`
        wrapped, policy = recipe_policy(cfg, args.recipe, args.lora_rank)
        wrapped.to(device)
    else:
        wrapped = policy = DiT4DiTPolicy(cfg).to(device)
    b, t, h = args.batch_size, cfg.num_video_frames, cfg.chunk_size
    batch = {c: torch.rand(b, t, 3, res, res, device=device) * 2 - 1 for c in cams}
    batch["observation.state"] = torch.randn(b, t, 8, device=device)
    batch["action"] = torch.randn(b, h, 7, device=device)
    batch["action_is_pad"] = torch.zeros(b, h, dtype=torch.bool, device=device)
    # `--instructions` distinct instructions over the batch: the text path runs once per distinct one.
    tasks = [f"pick up the black bowl and place it on plate {i % args.instructions}" for i in range(b)]
    batch["task"] = (
        tasks if args.instructions > 1 else ["pick up the black bowl and place it on the plate"] * b
    )
    groups = trained_param_groups(wrapped, args.recipe or "full")
    opt = cfg.get_optimizer_preset().build(groups)  # as lerobot-train builds it
    autocast = torch.autocast(device.type, dtype=DTYPES[cfg.dtype], enabled=cfg.dtype != "float32")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_step():
        with autocast:
            loss, _ = wrapped.forward(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), cfg.optimizer_grad_clip_norm)
        opt.step()

    def measure(fn) -> float:
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    results = {}
    if not args.inference_only:
        wrapped.train()
        if args.latent_cache:
            read_latents_from_memory(policy, batch)
        results["train_step_ms"] = measure(train_step) * 1000
    obs = {c: batch[c][:1, 0].expand(args.inference_batch_size, -1, -1, -1) for c in cams}
    obs["observation.state"] = batch["observation.state"][:1, 0].expand(args.inference_batch_size, -1)
    obs["task"] = batch["task"][:1] * args.inference_batch_size
    policy.eval()

    def new_chunk():
        policy.reset()
        with autocast:
            policy.select_action(obs)

    results["chunk_ms"] = measure(new_chunk) * 1000

    # The stages of one chunk, through the policy's public seams (with the caches warm, as in a rollout).
    with torch.no_grad(), autocast:
        video = tile_cameras(obs, policy.config)[:, :, :1]
        tasks = obs["task"]
        context = policy.video.text_context(tasks)
        text_key = policy.video.text_context_key(
            tasks
        )  # as `predict_action_chunk` passes it: text K/V reused
        cond = policy.video.encode_video(video)
        feature_noise = torch.randn(cond.shape[0], cond.shape[1], policy.num_latent_frames, *cond.shape[-2:])
        features = policy.extract_features(
            cond, context, noise=feature_noise, projected=True, text_key=text_key
        )
        state = padded_state(obs, policy.config)
        action_noise = torch.randn(cond.shape[0], cfg.chunk_size, cfg.max_action_dim)
        stages = {
            "text_context": lambda: policy.video.text_context(tasks),
            "vae_encode_frame0": lambda: policy.video.encode_video(video),
            "feature_forward": lambda: policy.extract_features(
                cond, context, noise=feature_noise, projected=True, text_key=text_key
            ),
            "action_sampling": lambda: policy.action_head.sample(
                state, features.float(), action_noise, cfg.num_inference_steps
            ),
        }
        for name, fn in stages.items():
            results[f"stage_{name}_ms"] = measure(fn) * 1000
    results["peak_memory_mib"] = _peak_memory_mb(device)
    results["trained_params"] = sum(p.numel() for g in groups for p in g["params"])
    return {
        "base_model": base,
        "config": {
            "dtype": cfg.dtype,
            "cameras": len(cams),
            "resolution": res,
            "train_batch": b,
            "inference_batch": args.inference_batch_size,
            "caches": not args.no_caches,
            "per_frame_adaln": not args.no_per_frame_adaln,
            "fast_vae_norms": not args.no_fast_norms,
            "latent_cache": args.latent_cache,
            "compile_model": cfg.compile_model,
            "distinct_instructions": min(args.instructions, b),
            "instruction_gather": not args.no_instruction_gather,
            "disabled_fast_paths": sorted(disabled_fast_paths(args) | fast_paths.disabled_by_env()),
            "recipe": args.recipe,
            "gradient_checkpointing": cfg.gradient_checkpointing,
        },
        "results": results,
    }


def main() -> None:
    from lerobot_dit4dit.testing.tiny_base import BENCH_BASES, BENCH_WIDTH_HELP

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--param-counts", action="store_true", help="print real-size parameter counts and exit"
    )
    parser.add_argument(
        "--base-model", default=None, help="hub id or directory; default: a tiny base built now"
    )
    parser.add_argument("--revision", default=None)
    parser.add_argument("--real-size", action="store_true", help="use the real-size action head defaults")
    parser.add_argument(
        "--width",
        choices=list(BENCH_BASES),
        default="tiny",
        help=f"without --base-model, the {BENCH_WIDTH_HELP}",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="training batch")
    parser.add_argument("--inference-batch-size", type=int, default=1)
    parser.add_argument("--inference-only", action="store_true", help="skip the train step")
    parser.add_argument(
        "--instructions",
        type=int,
        default=1,
        help="distinct instructions in the training batch (default 1: one task, as on one robot task)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="compile_model=true (the warm-up calls include compiling)"
    )
    parser.add_argument(
        "--no-instruction-gather",
        action="store_true",
        help="train on every sample's copy of a repeated instruction's text path (before)",
    )
    parser.add_argument(
        "--disable",
        nargs="+",
        default=[],
        choices=sorted(fast_paths.FAST_PATHS),
        help="switch these fast paths off (the 'before' of each; same as DIT4DIT_DISABLE)",
    )
    parser.add_argument("--no-caches", action="store_true", help="disable the inference K/V caches (before)")
    parser.add_argument("--no-cast", action="store_true", help="keep fp32 weights under autocast (before)")
    parser.add_argument(
        "--no-per-frame-adaln", action="store_true", help="diffusers' per-token adaLN modulation (before)"
    )
    parser.add_argument(
        "--no-fast-norms", action="store_true", help="diffusers' F.normalize in the VAE's RMS norms (before)"
    )
    parser.add_argument(
        "--latent-cache", action="store_true", help="train step with the VAE latents read, not encoded"
    )
    parser.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=None,
        help="train as this recipe of benchmarks.train_memory (checkpointing, LoRA, frozen video DiT)",
    )
    parser.add_argument("--lora-rank", type=int, default=16, help="with --recipe lora")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, pinned (default 1)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write the figures and the machine here")
    parser.add_argument(
        "--load",
        action="store_true",
        help="time from_pretrained + the first chunk in fresh processes, lean vs full load (--repeats each)",
    )
    parser.add_argument("--load-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load-mode", default="lean", help=argparse.SUPPRESS)
    parser.add_argument(
        "--checkpoint-dtype",
        default="float32",
        choices=tuple(DTYPES),
        help="with --load: the dtype the checkpoint is saved in (the policy's checkpoint_dtype)",
    )
    args = parser.parse_args()
    if args.instructions < 1:
        parser.error(f"--instructions={args.instructions} must be >= 1")
    if args.load_child:
        torch.set_num_threads(args.threads)
        print(json.dumps(load_child(args.load_child, args.load_mode)))
        return
    if args.param_counts:
        for name, n in real_param_counts().items():
            print(f"{name:36s} {n:>15,}")
        for name, n in real_text_conditioning_bytes().items():
            print(f"{name:52s} {n / 2**20:>10.2f} MiB")
        print("training memory per recipe: python -m benchmarks.train_memory")
        return
    from .machine import machine_info

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch threads: {torch.get_num_threads()} (pinned); 1-min load average before the run: {load:.2f}")
    if load >= 1.0:
        print("warning: other work is running on this machine; timings will be inflated")
    # The random base and the checkpoint it writes go to a scratch directory removed at the end (a medium
    # base is 630 MiB, a real-width one 8 GiB).
    with tempfile.TemporaryDirectory(prefix="dit4dit_speed_") as scratch:
        args.scratch = scratch
        out = time_load(args) if args.load else time_policy(args)
    out["threads"] = torch.get_num_threads()
    out["machine"] = machine_info()
    print(f"base model: {out['base_model']}  config: {out['config']}")
    for name, value in out["results"].items():
        print(f"{name:32s} {value:>12.1f}" if isinstance(value, float) else f"{name:32s} {value:>12,}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
