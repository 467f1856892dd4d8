"""Checkpoint IO and the weight lifecycle of a DiT4DiT policy.

A checkpoint holds the trained parts only (`TRAINED_PREFIXES`: the video DiT and the action head); the frozen
VAE and text encoder come back from `config.base_model`. Loading is strict (every key by name and shape),
streamed (one tensor at a time, the safetensors handle reopened every 256 MiB) or, when the file stores them
in the served dtype, kept as safetensors' copy-on-write views of the file (`map_weights`), and refuses
NaN/Inf.

Where the trained weights of a loaded policy stand is one explicit object, `WeightState`:

    fp32 (trained or loaded in float32)
      │ first inference with a reduced `dtype`, no training forward yet   (cast_for_inference)
      ▼
    cast to `dtype` ──── train() ───► fp32 again: read back exactly from `master_file` when the policy was
                                       loaded straight in `dtype`, else up-cast with a warning
    deferred blocks: the video-DiT blocks after `extract_layer` left unread at load (`defer_unused_blocks`);
    anything that needs them (training, the video loss, saving, state_dict, PEFT) calls
    `restore_deferred_blocks`.

This module never imports the policy class: it is given the policy object and reads its `config`, `video`,
`action_head` and `weights`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import CosmosTransformer3DModel
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from lerobot.utils.constants import ACTION, OBS_STATE
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import fast_paths
from .action_head import FlowMatchingActionHead
from .base_model import looks_local
from .configuration_dit4dit import DTYPES

logger = logging.getLogger(__name__)

# The only parameters written to our checkpoints. The frozen VAE and text encoder are re-loaded from
# `config.base_model` instead.
TRAINED_PREFIXES = ("video.transformer.", "action_head.")


@dataclass
class WeightState:
    """Where a policy's trained weights stand (one per policy, `policy.weights`).

    Attributes:
        inference_cast: the trained weights were cast to `config.dtype` for inference.
        master_file: the checkpoint they were loaded from straight in that dtype; it holds their full values
            (fp32, or the `checkpoint_dtype` it was written in), read back by `train()` and
            `save_pretrained`. None when the weights in memory are the master.
        deferred_file: the checkpoint the unread video-DiT blocks will be read from; None when none is
            deferred.
        total_blocks: the video DiT's block count when complete (meaningful while `deferred_file` is set).
        training_forwards: forward calls in train mode; a process that trained never casts (it keeps fp32
            master weights under autocast), and a non-finite loss names the count.
    """

    inference_cast: bool = False
    master_file: str | None = None
    deferred_file: str | None = None
    total_blocks: int = 0
    training_forwards: int = 0


def deferred_block_count(policy) -> int:
    """Number of video-DiT blocks not loaded yet (see `config.defer_unused_blocks`)."""
    if policy.weights.deferred_file is None:
        return 0
    return policy.weights.total_blocks - len(policy.video.transformer.transformer_blocks)


def restore_deferred_blocks(policy) -> None:
    """Read the video-DiT blocks after `extract_layer` from the checkpoint they were deferred from, in the
    dtype and on the device of the loaded blocks. A no-op when nothing is deferred."""
    state = policy.weights
    if state.deferred_file is None:
        return
    model_file, total = state.deferred_file, state.total_blocks
    transformer = policy.video.transformer
    keep = len(transformer.transformer_blocks)
    if not Path(model_file).is_file():
        raise FileNotFoundError(
            f"DiT4DiT: video-DiT blocks {keep}..{total - 1} were deferred at load and their checkpoint "
            f"{model_file} is gone. Load with --policy.defer_unused_blocks=false to keep every block."
        )
    with torch.device("meta"):
        blocks = list(CosmosTransformer3DModel.from_config(transformer.config).transformer_blocks)[keep:total]
    ref = next(transformer.transformer_blocks[0].parameters())
    with safe_open(model_file, framework="pt") as f:
        names = list(f.keys())  # noqa: SIM118 (a safe_open handle is no dict)
    for index, block in enumerate(blocks, start=keep):
        prefix = f"{BLOCKS_PREFIX}{index}."
        block_names = [k for k in names if k.startswith(prefix)]
        tensors = {k[len(prefix) :]: v for k, v in read_checkpoint(model_file, block_names)}
        bad = [k for k, v in tensors.items() if not all_finite(v)]
        if bad:
            raise ValueError(f"DiT4DiT checkpoint {model_file} holds NaN/Inf in {prefix}{bad[0]}")
        tensors = {k: v.to(ref.dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        block.load_state_dict(tensors, strict=True, assign=True)
        block.to(ref.device)
        block.train(policy.training)
        if policy.config.compile_model:
            block.compile()
    transformer.transformer_blocks.extend(blocks)
    state.deferred_file = None
    logger.info("DiT4DiT: loaded the deferred video-DiT blocks %d..%d", keep, total - 1)


def cast_for_inference(policy) -> None:
    """With `dtype` bfloat16/float16, cast the trained weights to it once, at the first inference of a process
    that has not trained: autocast would otherwise re-cast every fp32 weight on every call. A process that
    trains keeps fp32 master weights under autocast (lerobot-train's evaluation included)."""
    state = policy.weights
    dtype = DTYPES[policy.config.dtype]
    if dtype == torch.float32 or state.inference_cast or state.training_forwards > 0:
        return
    if not fast_paths.enabled("inference_cast"):  # the "before": fp32 weights under autocast every call
        return
    policy.video.transformer.to(dtype)
    policy.action_head.to(dtype)
    state.inference_cast = True
    logger.info("DiT4DiT: trained weights cast to %s for inference", policy.config.dtype)


def master_weights(policy) -> dict[str, Tensor] | None:
    """The fp32 trained weights of a policy loaded straight into a reduced `dtype` (`from_pretrained`), read
    again from its checkpoint; None when there is no such file (then the weights in memory are the master)."""
    state = policy.weights
    if state.master_file is None or not state.inference_cast:
        return None
    if not Path(state.master_file).is_file():
        raise FileNotFoundError(
            f"DiT4DiT: the policy was loaded in {policy.config.dtype} from {state.master_file}, which is "
            "gone; its fp32 weights cannot be read back to train or save. Load with --policy.dtype=float32."
        )
    return {k: v.float() if v.is_floating_point() else v for k, v in read_checkpoint(state.master_file)}


def weights_for_training(policy) -> None:
    """Before training: every block loaded, and fp32 weights. A policy loaded straight into bf16/fp16 reads
    the exact fp32 weights back from its checkpoint, in place (an optimizer built from get_optim_params()
    keeps its parameters); one cast after an fp32 load goes back up with the reduced rounding (warned)."""
    restore_deferred_blocks(policy)
    state = policy.weights
    if not state.inference_cast:
        return
    master = master_weights(policy)
    if master is None:
        logger.warning(
            "DiT4DiT: training a policy whose weights were cast to %s for inference; they go back to "
            "float32 with the %s rounding (load it afresh to train from the exact weights).",
            policy.config.dtype,
            policy.config.dtype,
        )
    policy.video.transformer.float()
    policy.action_head.float()
    if master is not None:
        with torch.no_grad():
            for name, tensor in nn.Module.state_dict(policy, keep_vars=True).items():
                if name in master:
                    tensor.data.copy_(master[name])
        logger.info("DiT4DiT: fp32 weights read back from the checkpoint for training")
    state.inference_cast = False
    state.master_file = None


def save_trained(policy, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
    """Write `model.safetensors` with the video DiT and the action head only, in fp32 when the policy was
    loaded straight into a reduced dtype (its checkpoint's own weights), with the embodiment in the metadata.

    Raises:
        ValueError naming the parameters that hold NaN/Inf; nothing is written then.
    """
    if deferred_block_count(policy):
        restore_deferred_blocks(policy)
        state_dict = None  # a state dict taken before the restore lacks the deferred blocks
    if state_dict is None:
        state_dict = master_weights(policy) or nn.Module.state_dict(policy)
    trained = {k: v.detach().contiguous() for k, v in state_dict.items() if k.startswith(TRAINED_PREFIXES)}
    bad = [k for k, v in trained.items() if not all_finite(v)]
    if bad:
        raise ValueError(
            f"DiT4DiT: refusing to save {save_directory}: {len(bad)} parameter tensors hold NaN/Inf "
            f"(first: {bad[:3]}). The run diverged; nothing was written."
        )
    cfg = policy.config
    store = DTYPES[cfg.checkpoint_dtype]
    if store != torch.float32:
        if policy.weights.training_forwards:
            logger.warning(
                "DiT4DiT: writing %s in %s (checkpoint_dtype): training resumed from it starts from the "
                "rounded weights, not this run's float32 ones.",
                save_directory,
                cfg.checkpoint_dtype,
            )
        trained = {k: v.to(store) if v.is_floating_point() else v for k, v in trained.items()}
    metadata = {"format": "pt", "dit4dit_cameras": json.dumps(cfg.cameras)}
    metadata["dit4dit_training_mode"] = cfg.training_mode
    if cfg.action_feature is not None:  # a video-only model trained on action-free data has neither
        metadata["dit4dit_action_dim"] = str(cfg.action_dim)
    if cfg.robot_state_feature is not None:
        metadata["dit4dit_state_dim"] = str(cfg.state_dim)
    # Written beside and then renamed over the old file: a failed save leaves the old checkpoint whole, and
    # a policy that maps the old file (`map_weights`) keeps reading its inode, never a half-written one.
    target = Path(save_directory) / SAFETENSORS_SINGLE_FILE
    partial = target.with_name(target.name + ".partial")
    try:
        save_file(trained, str(partial), metadata=metadata)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def load_checkpoint(model, model_file: str):
    """Load `model_file` into `model` (built with `load_base_transformer_weights=False`): strict keys and
    shapes, NaN/Inf refused, the embodiment and cameras checked against the config, straight into a reduced
    `dtype` when one is set, and the blocks after `extract_layer` deferred when `defer_unused_blocks`."""
    try:
        with safe_open(model_file, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise ValueError(
            f"DiT4DiT: cannot read {model_file}: {e}. The file is damaged or not safetensors."
        ) from e
    new_embodiment = []
    for what in ("action", "state"):
        saved = metadata.get(f"dit4dit_{what}_dim")
        feature = getattr(model.config, "action_feature" if what == "action" else "robot_state_feature")
        expected = None if feature is None else feature.shape[0]
        if saved is not None and expected is not None and int(saved) != expected:
            new_embodiment.append(f"{what} dim {saved} -> {expected}")
    # A video-pretrained checkpoint's action head never trained: fine-tuning starts it fresh, built for the
    # new dataset, and keeps only the video DiT.
    saved_mode = metadata.get("dit4dit_training_mode")
    video_pretrained = saved_mode == "video" and model.config.training_mode != "video"
    if new_embodiment and not model.config.reinit_embodiment_layers and not video_pretrained:
        raise ValueError(
            f"DiT4DiT checkpoint {model_file} was trained for another embodiment "
            f"({', '.join(new_embodiment)} from the dataset/env features). To fine-tune it on this "
            "one, keeping both DiTs and re-initialising the state encoder, action encoder and action "
            "decoder, pass --policy.reinit_embodiment_layers=true."
        )
    saved_cameras = metadata.get("dit4dit_cameras")
    if saved_cameras is not None and json.loads(saved_cameras) != model.config.cameras:
        raise ValueError(
            f"DiT4DiT checkpoint {model_file} was trained on cameras {json.loads(saved_cameras)} "
            f"(tiled in that order), but this config has {model.config.cameras}. Set "
            "--policy.camera_order to the trained cameras (rename env cameras with --rename_map)."
        )
    # Lean inference loading: leave the blocks after `extract_layer` unread (see `defer_unused_blocks`).
    # They are on the meta device (`load_base_transformer_weights=False`), so they hold no memory either.
    total = len(model.video.transformer.transformer_blocks)
    keep = model.config.extract_layer + 1
    defer = model.config.defer_unused_blocks and not model.config.save_predicted_video and keep < total
    if defer and any(not p.is_meta for p in model.video.transformer.transformer_blocks[keep].parameters()):
        defer = False  # built with the base's weights: nothing to save by deferring
    with safe_open(model_file, framework="pt") as f:
        names = f.keys()  # a safe_open handle is not iterable
        if defer:
            names = [k for k in names if (_block_index(k) if _block_index(k) is not None else -1) < keep]
    if defer:
        blocks = model.video.transformer.transformer_blocks
        model.video.transformer.transformer_blocks = torch.nn.ModuleList(list(blocks)[:keep])
    dtype = DTYPES[model.config.dtype]
    fresh = new_embodiment or video_pretrained
    if model.config.map_weights and not fresh and _stored_in(model_file, names, dtype):
        # safetensors hands out views of its private (copy-on-write) map of the file: assigned as they are,
        # the weights are never copied, and a page is read when first used.
        _load_mapped(model, model_file, dict(read_checkpoint(model_file, names)), dtype)
        if dtype != torch.float32:  # the file's own values are the master: train() reads them back up-cast
            model.weights.inference_cast = True
            model.weights.master_file = str(model_file)
    elif dtype != torch.float32 and not fresh and fast_paths.enabled("inference_cast"):
        # Straight into the inference dtype, one tensor at a time: the destinations are allocated first,
        # then each fp32 tensor is read, cast into its place and freed, so the peak is the reduced-dtype
        # model plus one tensor (reading every tensor first held fp32 and bf16 copies at once, and
        # interleaving long-lived casts with freed reads fragmented the heap). train() and saving read
        # the fp32 weights back from the file.
        _stream_trained_state_dict(model, model_file, names, dtype)
        model.weights.inference_cast = True
        model.weights.master_file = str(model_file)
    else:
        state_dict = dict(read_checkpoint(model_file, names))
        if not model.config.map_weights:  # views of the file (see above): give the policy its own memory
            state_dict = {k: v.clone() for k, v in state_dict.items()}
        _refuse_non_finite(
            model_file,
            [k for k, v in state_dict.items() if not all_finite(v)],
        )
        if video_pretrained:
            state_dict = _fresh_action_head(model, state_dict, model_file)
            _fresh_processors_after_video_pretraining(model.config)
        elif new_embodiment:
            state_dict = _reinit_embodiment_layers(model, state_dict, new_embodiment)
        load_trained_state_dict(model, state_dict, source=model_file)
        del state_dict
    if defer:  # set last: state_dict() restores deferred blocks, and loading itself reads it
        model.weights.deferred_file, model.weights.total_blocks = str(model_file), total
    return model


def _fresh_action_head(model, state_dict: dict[str, Tensor], model_file: str) -> dict[str, Tensor]:
    """`state_dict` with the action head replaced by `model`'s own, freshly initialised one; logs which
    weights come from the checkpoint and which are new."""
    initialise_action_head(model)
    own = {k: v for k, v in nn.Module.state_dict(model).items() if k.startswith("action_head.")}
    kept = {k: v for k, v in state_dict.items() if not k.startswith("action_head.")}
    logger.info(
        "DiT4DiT: %s was trained with training_mode=video. From it: the video DiT (%d tensors, %.1f M "
        "values). New, initialised for this dataset: the action head (%d tensors, %.1f M values).",
        model_file,
        len(kept),
        sum(v.numel() for v in kept.values()) / 1e6,
        len(own),
        sum(v.numel() for v in own.values()) / 1e6,
    )
    return {**kept, **own}


def _fresh_processors_after_video_pretraining(config) -> None:
    """A video-pretrained checkpoint's processors know no state or action: its input check has no dims and its
    normaliser no statistics for them. When lerobot-train loads them for a fine-tune, it hands the new
    dataset's raw statistics to that normaliser, which skips `min_normalization_range` (a joint that barely
    moves then has its jitter stretched over [-1, 1], and a rollout state a little off it lands far outside).
    So, as for `reinit_embodiment_layers`, `pretrained_path` is cleared and lerobot-train builds the
    processors from this config and the dataset's statistics, as for a new policy.

    One exception: LeRobot's `--rename_map` reaches only processors loaded from a checkpoint. When a camera of
    the checkpoint is not a feature of the fine-tuning dataset (a rename is in play, or LeRobot's own feature
    check refuses the run next), the checkpoint's processors are kept and the floor is skipped, with a
    warning when one is set."""
    names = getattr(config, "_dataset_feature_names", None)
    if names is None:  # not a lerobot-train fine-tune (no dataset features were given): nothing to build
        return
    renamed = [camera for camera in config.image_features if camera not in names]
    if not renamed:
        logger.info(
            "DiT4DiT: fine-tuning a video-pretrained checkpoint: the processors are built from this config "
            "and the fine-tuning dataset's statistics, not loaded from the checkpoint."
        )
        config.pretrained_path = None
    elif config.min_normalization_range > 0:
        logger.warning(
            "DiT4DiT: cameras %s of the video-pretrained checkpoint are not features of the fine-tuning "
            "dataset, so its processors are loaded for LeRobot's --rename_map; lerobot-train then gives "
            "their normaliser the dataset's raw statistics and min_normalization_range=%s is not applied. "
            "To keep it, fine-tune on a dataset that names its cameras as the checkpoint does.",
            renamed,
            config.min_normalization_range,
        )


# Parts of the action head that read or write the embodiment's state and action vectors.
EMBODIMENT_PREFIXES = (
    "action_head.state_encoder.",
    "action_head.action_encoder.",
    "action_head.action_decoder.",
)


def initialise_action_head(model) -> None:
    """Give an action head built on the meta device (`from_pretrained`) its random initialisation, in place
    (the module keeps its hooks, compiled forward and requires_grad flags). A no-op for a real head."""
    head = model.action_head
    if not any(p.is_meta for p in head.parameters()):
        return
    fresh = FlowMatchingActionHead.from_config(model.config, cross_attention_dim=model.video.hidden_size)
    head.load_state_dict(fresh.state_dict(), strict=True, assign=True)


def _reinit_embodiment_layers(model, state_dict: dict, changes: list[str]) -> dict:
    """The checkpoint without its embodiment layers: `model` keeps their fresh initialisation, every other
    weight (both DiTs) comes from the checkpoint. Fresh processors follow: `pretrained_path` is cleared so
    that `lerobot-train` builds them from this config and the new dataset's statistics instead of loading the
    old embodiment's."""
    initialise_action_head(model)
    own = nn.Module.state_dict(model)
    dropped = sorted(k for k in state_dict if k.startswith(EMBODIMENT_PREFIXES))
    for key in dropped:
        logger.warning("DiT4DiT: new embodiment (%s): re-initialising %s", ", ".join(changes), key)
    kept = {k: v for k, v in state_dict.items() if k not in dropped}
    kept.update({k: v for k, v in own.items() if k.startswith(EMBODIMENT_PREFIXES)})
    model.config.pretrained_path = None
    return kept


def find_checkpoint_file(path: str, filename: str, **kwargs) -> str | None:
    """`filename` of a local checkpoint directory or hub repo, or None when the checkpoint has none."""
    if Path(path).is_dir():
        local = Path(path) / filename
        return str(local) if local.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(
            path,
            filename,
            revision=kwargs.get("revision"),
            cache_dir=kwargs.get("cache_dir"),
            force_download=kwargs.get("force_download", False),
            token=kwargs.get("token"),
            local_files_only=kwargs.get("local_files_only", False),
        )
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def check_checkpoint_path(path: str, has_config: bool, expected_type: str) -> None:
    """Fail early, naming the file, for local checkpoints that LeRobot would otherwise report obscurely: a
    directory that does not exist (LeRobot: "Repo id must be in the form..."), an unreadable config.json, or a
    checkpoint of another policy type."""
    local = Path(path).expanduser()
    if not local.exists():
        if looks_local(path):
            raise FileNotFoundError(f"DiT4DiT: checkpoint directory {path} does not exist.")
        return  # a hub repo id
    if not local.is_dir():
        raise NotADirectoryError(
            f"DiT4DiT: {path} is a file; pass the checkpoint directory (pretrained_model)."
        )
    config_file = local / "config.json"
    if has_config:
        return
    if not config_file.is_file():
        raise FileNotFoundError(f"DiT4DiT: {path} has no config.json; is it a `pretrained_model` directory?")
    try:
        policy_type = json.loads(config_file.read_text()).get("type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"DiT4DiT: cannot parse {config_file}: {e}.") from e
    if policy_type != expected_type:
        raise ValueError(
            f"DiT4DiT: {config_file} is a {policy_type!r} checkpoint, not dit4dit; load it with that policy "
            "class (or lerobot.policies.factory.make_policy)."
        )


PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")
STAT_NAMES = ("mean", "std", "min", "max")  # per-dimension statistics: one value per feature dimension


def check_processor_files(path: str, **kwargs) -> None:
    """Refuse, naming the file, a checkpoint whose processor files are damaged or were made for other
    weights, before LeRobot reads them (it reports a bare JSON or safetensors error without the file).

    Checks each `policy_*processor.json` parses, each state file it names exists and reads, and each
    per-dimension statistic of the state and the action has the width `model.safetensors` was trained for."""
    trained = {}
    model_file = find_checkpoint_file(path, SAFETENSORS_SINGLE_FILE, **kwargs)
    if model_file is not None:
        with safe_open(model_file, framework="pt") as f:
            metadata = f.metadata() or {}
        trained = {
            key: int(metadata[f"dit4dit_{what}_dim"])
            for key, what in ((ACTION, "action"), (OBS_STATE, "state"))
            if f"dit4dit_{what}_dim" in metadata
        }
    for name in PROCESSOR_FILES:
        file = find_checkpoint_file(path, name, **kwargs)
        if file is None:
            continue
        try:
            steps = json.loads(Path(file).read_text())["steps"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"DiT4DiT: cannot parse {file}: {e!r}. The file is damaged.") from e
        for state_file in [s["state_file"] for s in steps if isinstance(s, dict) and s.get("state_file")]:
            state_path = find_checkpoint_file(path, state_file, **kwargs)
            if state_path is None:
                raise FileNotFoundError(f"DiT4DiT: {file} names {state_file}, which {path} does not hold.")
            try:
                with safe_open(state_path, framework="pt") as f:
                    shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(
                    f"DiT4DiT: cannot read {state_path}: {e}. The file is damaged or not safetensors."
                ) from e
            for key, shape in sorted(shapes.items()):
                feature, _, stat = key.rpartition(".")
                if stat in STAT_NAMES and feature in trained and shape[-1:] != (trained[feature],):
                    raise ValueError(
                        f"DiT4DiT: {state_path} was made for other weights: {key} has shape {shape}, but "
                        f"{model_file} was trained for a {trained[feature]}-D {feature}."
                    )


BLOCKS_PREFIX = "video.transformer.transformer_blocks."


def _block_index(key: str) -> int | None:
    """Video-DiT block number of a checkpoint key, None for other keys."""
    if not key.startswith(BLOCKS_PREFIX):
        return None
    return int(key[len(BLOCKS_PREFIX) :].split(".", 1)[0])


def _check_trained_keys(own: dict[str, Tensor], shapes: dict[str, tuple], source: str) -> None:
    """Raise a ValueError naming the unexpected keys, the missing keys and the shape mismatches between the
    model's trained tensors `own` and a checkpoint's `shapes` (name -> shape)."""
    unexpected = sorted(set(shapes) - set(own))
    missing = sorted(set(own) - set(shapes))
    mismatched = [
        f"{k}: checkpoint {tuple(shapes[k])} vs model {tuple(own[k].shape)}"
        for k in sorted(set(shapes) & set(own))
        if tuple(shapes[k]) != tuple(own[k].shape)
    ]
    problems = []
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched[:10]}")
    if problems:
        raise ValueError(f"DiT4DiT: cannot load {source}: " + "; ".join(problems))


def _trained_tensors(model) -> dict[str, Tensor]:
    return {k: v for k, v in nn.Module.state_dict(model).items() if k.startswith(TRAINED_PREFIXES)}


def _stream_trained_state_dict(model, model_file: str, names: list[str], dtype) -> None:
    """Load the trained video DiT + action head from `model_file` in `dtype`, one tensor at a time.

    The video DiT is on the meta device: its parameters are allocated in `dtype` (uninitialised) first, and
    every one of them is then written from the file; the strict key and shape check runs before anything is
    read, and a NaN/Inf tensor raises after the pass (the half-loaded policy is never returned)."""
    model.video.transformer.to(dtype)
    model.action_head.to(dtype)
    with safe_open(model_file, framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in names}
    _check_trained_keys(_trained_tensors(model), shapes, source=model_file)
    for module in (model.video.transformer, model.action_head):
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            module.to_empty(device="cpu")  # every tensor it allocates is written below (keys checked)
    own = _trained_tensors(model)  # views of the parameters and buffers, now allocated
    bad = []
    with torch.no_grad():
        for k, tensor in read_checkpoint(model_file, names):
            if not all_finite(tensor):
                bad.append(k)
            own[k].copy_(tensor)
            del tensor
    _refuse_non_finite(model_file, bad)


# safetensors' names of the floating dtypes a checkpoint can store, for `_stored_in`.
SAFETENSORS_FLOAT_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
}


def _stored_in(model_file: str, names: list[str], dtype: torch.dtype) -> bool:
    """Whether every floating tensor `names` of the file is stored in `dtype` (read from its header)."""
    with safe_open(model_file, framework="pt") as f:
        stored = {f.get_slice(k).get_dtype() for k in names}
    integer = {name for name in stored if name not in SAFETENSORS_FLOAT_DTYPES and not name.startswith("F")}
    return {SAFETENSORS_FLOAT_DTYPES.get(name) for name in stored - integer} == {dtype}


def _load_mapped(model, model_file: str, tensors: dict[str, Tensor], dtype: torch.dtype) -> None:
    """Load the trained video DiT + action head from `tensors`, views of `model_file` whose floating tensors
    are in `dtype`, as they are: strict keys and shapes first, then NaN/Inf refused (which reads each page
    once, as acting would)."""
    model.video.transformer.to(dtype)
    model.action_head.to(dtype)
    _check_trained_keys(_trained_tensors(model), {k: tuple(v.shape) for k, v in tensors.items()}, model_file)
    _refuse_non_finite(model_file, [k for k, v in tensors.items() if not all_finite(v)])
    load_trained_state_dict(model, tensors, source=model_file)
    logger.info("DiT4DiT: %d trained tensors mapped from %s (%s)", len(tensors), model_file, dtype)


def read_checkpoint(model_file: str, names: list[str] | None = None, reopen_bytes: int = 256 * 2**20):
    """Yield (name, tensor) for `names` (default: every tensor) of a safetensors file, in that order.

    The file is reopened after every `reopen_bytes` read: the pages a safetensors handle has read stay mapped,
    and count in the process's RSS, until it closes. With one handle, loading a real-width fp32 checkpoint
    into a bf16 policy held every page read; reopening every 256 MiB bounds it (figures: docs/speed.md).
    """
    if names is None:
        with safe_open(model_file, framework="pt") as f:
            names = list(f.keys())  # noqa: SIM118 (a safe_open handle is no dict)
    pending = list(names)[::-1]  # popped from the end: in order
    while pending:
        with safe_open(model_file, framework="pt") as f:
            read = 0
            while pending and read < reopen_bytes:
                k = pending.pop()
                tensor = f.get_tensor(k)
                read += tensor.numel() * tensor.element_size()
                yield k, tensor
                del tensor


def all_finite(tensor: Tensor) -> bool:
    """False when a floating tensor holds NaN or ±Inf (non-floating tensors are always finite). One
    `aminmax` pass: NaN propagates into both ends and an infinity is one of them, and it allocates no
    (N,) bool mask as `isfinite().all()` does, which made the check most of a real-width load."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _refuse_non_finite(model_file: str, bad: list[str]) -> None:
    """Raise naming the checkpoint tensors `bad` that hold NaN/Inf (none: nothing to do)."""
    if bad:
        raise ValueError(
            f"DiT4DiT checkpoint {model_file} holds NaN/Inf in {len(bad)} tensors (first: {bad[:3]}): "
            "the file is corrupted or the run diverged."
        )


def load_trained_state_dict(model, state_dict: dict[str, Tensor], source: str) -> None:
    """Load the trained video DiT + action head strictly: every key must match by name and shape.

    Raises:
        ValueError naming the unexpected keys, the missing keys and the shape mismatches.
    """
    own = _trained_tensors(model)
    _check_trained_keys(own, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    # assign: take the checkpoint's tensors as they are (a video DiT built on the meta device has none yet);
    # they are cast to each parameter's dtype first so that assigning never changes a module's precision.
    own_dtypes = {k: v.dtype for k, v in own.items()}
    state_dict = {k: v.to(own_dtypes[k]) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=False, assign=True)
    meta = [k for k, v in nn.Module.state_dict(model).items() if v.is_meta]
    if meta:
        raise ValueError(f"DiT4DiT: {source} left {len(meta)} tensors unset (first: {meta[:3]}).")
