"""The text context of the video DiT: instruction -> prompt embeddings (the frozen Qwen2.5-VL-7B text encoder,
loaded lazily and cached per instruction) -> the DiT's `crossattn_proj` -> (L, D) context; and shipped text
conditioning: that projected context saved next to the weights, so that inference on a shipped instruction
never loads (or downloads) the text encoder.

What is stored: for each instruction, the output of the video DiT's `crossattn_proj` applied to its prompt
embeddings, (L, D) = (max_prompt_tokens, DiT text width): 512 x 1,024 values, 1 MiB per instruction in bf16 at
real width, against 103 MB for the raw 512 x 100,352 embeddings. It is exact while the projection weights
are the ones it was computed with; `projection_sha256` in the metadata ties the file to them, and loading
refuses a file made for other weights. Padded positions are kept: they differ between prompts (the encoder
attends to the whole padded sequence).

    text_conditioning.safetensors
        tensors   context.<i>: (L, D), one per instruction
        metadata  format, instructions (JSON list, index i), max_prompt_tokens, base_model,
                  base_model_revision, projection_sha256, dtype

Add instructions to an existing checkpoint on a machine that has the text encoder:

    dit4dit-text-conditioning --checkpoint outputs/.../pretrained_model \
        --instructions "put the bowl on the plate" "open the drawer"
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import Qwen2_5_VLForConditionalGeneration

from . import fast_paths
from .base_model import resolve_base_model
from .configuration_dit4dit import DTYPES

logger = logging.getLogger(__name__)
FILENAME = "text_conditioning.safetensors"
FORMAT = "dit4dit-text-conditioning-v1"
TEXT_ENCODER_BATCH = 8  # instructions per text-encoder call


def check_tasks(tasks, batch_size: int | None = None) -> list[str]:
    """The batch's instructions as a list of strings: the one check of `task` (processor and policy).

    Args:
        tasks: a string (one instruction for the whole batch) or a list/tuple of strings.
        batch_size: when given, the number of instructions a list must hold (a string is repeated).
    Raises:
        KeyError when `tasks` is None, TypeError naming non-string instructions, ValueError on a count that
        does not match `batch_size`.
    """
    if tasks is None:
        raise KeyError("DiT4DiT: the batch has no 'task' instruction (LeRobot datasets and envs provide it).")
    if isinstance(tasks, str):
        return [tasks] * (batch_size or 1)
    bad = [t for t in tasks if not isinstance(t, str)] if isinstance(tasks, list | tuple) else [tasks]
    if bad:
        raise TypeError(f"DiT4DiT: 'task' must be instruction strings; got {bad[:3]!r}.")
    if batch_size is not None and len(tasks) != batch_size:
        raise ValueError(f"DiT4DiT: {len(tasks)} task strings for a batch of {batch_size}.")
    return list(tasks)


class TextContext:
    """The text half of `CosmosVideoBackbone` (a mixin: it reads the backbone's `_pipe`, `transformer`,
    `base_model`, `revision`, `frozen_dtype`, `max_prompt_tokens` and `latents_mean`).

    The text encoder is not a registered submodule: it is frozen, loaded lazily, and never enters
    state_dict().
    """

    def _init_text_context(self) -> None:
        self._set_text_encoder(None)
        self._prompt_cache: dict[str, Tensor] = {}
        self._pending_prompts: list[str] = []
        self.text_encoder_calls = 0  # number of text-encoder forwards, for monitoring the cache
        # Projected contexts shipped with a checkpoint: instruction -> (L, D) output of the DiT's
        # `crossattn_proj`, valid while those weights are the ones they came from (their in-place version).
        self._shipped_context: dict[str, Tensor] = {}
        self._shipped_context_version: int | None = None
        self._shipped_generation = 0  # counts ship_text_context calls: part of `text_context_key`
        self._context_memo: tuple[tuple, Tensor] | None = None

    @property
    def text_encoder_loaded(self) -> bool:
        return self._text_encoder is not None

    @property
    def text_encoder(self) -> Qwen2_5_VLForConditionalGeneration | None:
        """The text encoder when loaded, else None (it is not a submodule: frozen, lazy, never saved)."""
        return self._text_encoder

    def load_text_encoder(self) -> Qwen2_5_VLForConditionalGeneration:
        """The frozen text encoder of `base_model`, loaded on first use in `frozen_dtype`."""
        if self._text_encoder is None:
            logger.info("Loading the text encoder of %s", self.base_model)
            local = resolve_base_model(
                self.base_model, self.revision, transformer_weights=False, text_encoder=True
            )
            if not (Path(local) / "text_encoder").is_dir():
                raise FileNotFoundError(
                    f"DiT4DiT: the base model {self.base_model} has no text_encoder/, and the checkpoint "
                    f"ships no text conditioning for the instruction(s) {self._pending_prompts}. Add them "
                    "on a machine with the encoder: dit4dit-text-conditioning "
                    "--checkpoint <dir> --instructions ..."
                )
            te = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                local, subfolder="text_encoder", dtype=self.frozen_dtype
            )
            te.requires_grad_(False)
            te.eval()
            self._set_text_encoder(te.to(self.latents_mean.device))
        return self._text_encoder

    def _set_text_encoder(self, text_encoder: Qwen2_5_VLForConditionalGeneration | None) -> None:
        object.__setattr__(self, "_text_encoder", text_encoder)
        self._pipe.text_encoder = text_encoder

    def release_text_encoder(self) -> None:
        """Free the text encoder (it is re-loaded on the next uncached instruction)."""
        self._set_text_encoder(None)

    def _chat_token_ids(self, prompt: str) -> list[int]:
        """Token ids of `prompt` in Cosmos' chat template, untruncated and unpadded.

        The conversation mirrors `Cosmos2_5_PredictBasePipeline._get_prompt_embeds` (guarded in
        tests/test_upstream.py), which tokenises the same way and then truncates to `max_prompt_tokens`.
        """
        system = "You are a helpful assistant who will provide prompts to an image generator."
        conversation = [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ]
        ids = self._pipe.tokenizer.apply_chat_template(
            conversation, tokenize=True, add_generation_prompt=False, add_vision_id=False
        )
        return list(ids["input_ids"] if not isinstance(ids, list) else ids)

    def instruction_token_counts(self, prompt: str) -> tuple[int, int, int]:
        """(template prefix, instruction, template suffix) token counts of `prompt` in the chat template."""
        full, empty = self._chat_token_ids(prompt), self._chat_token_ids("")
        prefix = next((i for i, (a, b) in enumerate(zip(full, empty, strict=False)) if a != b), len(empty))
        suffix = len(empty) - prefix
        return prefix, len(full) - prefix - suffix, suffix

    def check_instruction_fits(self, prompt: str) -> None:
        """Raise when `max_prompt_tokens` cuts the instruction off entirely; warn when it cuts part of it.

        Raises:
            ValueError naming the instruction, its token count and the length it needs.
        """
        prefix, n, suffix = self.instruction_token_counts(prompt)
        kept = max(0, min(n, self.max_prompt_tokens - prefix))
        needed = prefix + n + suffix
        if n > 0 and kept == 0:
            raise ValueError(
                f"DiT4DiT: max_prompt_tokens={self.max_prompt_tokens} cuts the instruction "
                f"{prompt!r} off entirely "
                f"(the chat template takes {prefix} tokens before it, the instruction {n}); every "
                f"task would get "
                f"the same embedding. Set --policy.max_prompt_tokens={needed} or more."
            )
        if kept < n:
            logger.warning(
                "DiT4DiT: max_prompt_tokens=%d keeps %d of the %d tokens of the instruction %r; "
                "set --policy.max_prompt_tokens=%d to keep all of it.",
                self.max_prompt_tokens,
                kept,
                n,
                prompt,
                needed,
            )

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Tensor:
        """Prompt embeddings (B, L, E) for `prompts`, computed once per unique instruction and cached.

        E = num_text_layers * text_hidden: every decoder layer, standardised per token (Cosmos-Predict2.5).
        """
        device = self.latents_mean.device
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        for prompt in missing:
            self.check_instruction_fits(prompt)
        self._pending_prompts = missing
        if missing:
            te = self.load_text_encoder()
            te.to(device)
            # A few prompts per call: the encoder returns the hidden states of every layer (29 x 512 x 3584
            # for Cosmos-Reason1), which for a whole training batch would not fit next to the DiTs.
            for start in range(0, len(missing), TEXT_ENCODER_BATCH):
                group = missing[start : start + TEXT_ENCODER_BATCH]
                embeds = self._pipe._get_prompt_embeds(
                    group, max_sequence_length=self.max_prompt_tokens, device=device, dtype=te.dtype
                )
                self.text_encoder_calls += 1
                for prompt, emb in zip(group, embeds, strict=True):
                    self._prompt_cache[prompt] = emb
        out = torch.stack([self._prompt_cache[p] for p in prompts])
        return out.to(device=device, dtype=self.transformer.dtype)

    # ------------------------------------------------------------------ projected text context
    @property
    def crossattn_proj(self) -> nn.Module:
        return self.transformer.crossattn_proj

    def _proj_version(self) -> int:
        """In-place update counter of the projection weights: an optimizer step changes it."""
        return sum(fast_paths.tensor_version(p) for p in self.crossattn_proj.parameters())

    def cached_prompts(self) -> list[str]:
        """Instructions whose prompt embeddings this process computed (e.g. every training instruction)."""
        return list(self._prompt_cache)

    def ship_text_context(self, contexts: dict[str, Tensor]) -> None:
        """Install projected contexts (instruction -> (L, D)) computed with the current projection weights."""
        self._shipped_context = {k: v.detach() for k, v in contexts.items()}
        self._shipped_context_version = self._proj_version()
        self._shipped_generation += 1

    def shipped_instructions(self) -> list[str]:
        """Instructions whose projected context is installed and still valid for the current weights."""
        if self._shipped_context_version != self._proj_version():
            return []
        return list(self._shipped_context)

    def text_context_key(self, prompts: list[str]) -> tuple:
        """The key of the projected context of `prompts` (`text_context`): equal keys, equal contexts. It
        names the instructions and every input the projection reads (the projection weights' in-place
        version, the shipped contexts, the device, dtype and autocast state); the text K/V cache of the DiT
        (`fast_paths.KeyedOutput`) reuses its projections under it."""
        device, dtype = self.latents_mean.device, self.transformer.dtype
        return (
            tuple(prompts),
            self._proj_version(),
            self._shipped_generation,
            self._shipped_context_version,
            str(device),
            dtype,
            torch.is_autocast_enabled(device.type),
        )

    @torch.no_grad()
    def text_context(self, prompts: list[str]) -> Tensor:
        """Projected text context (B, L, D) for inference: the DiT's `crossattn_proj` applied to the prompt
        embeddings. Shipped contexts are used as they are, so a shipped instruction never needs the text
        encoder; any other instruction is encoded (loading the encoder) and projected. The last result is
        kept under its `text_context_key`."""
        device, dtype = self.latents_mean.device, self.transformer.dtype
        key = self.text_context_key(prompts)
        if self._context_memo is not None and self._context_memo[0] == key:
            return self._context_memo[1]
        shipped = set(self.shipped_instructions())
        out: dict[str, Tensor] = {p: self._shipped_context[p] for p in dict.fromkeys(prompts) if p in shipped}
        todo = [p for p in dict.fromkeys(prompts) if p not in out]
        if todo:
            projected = self.crossattn_proj(self.encode_prompts(todo))
            out.update(zip(todo, projected, strict=True))
        context = torch.stack([out[p].to(device=device, dtype=dtype) for p in prompts])
        self._context_memo = (key, context)
        return context

    def training_context(self, prompts: list[str]) -> tuple[Tensor, Tensor | None]:
        """Projected text context of a training batch, computed once per distinct instruction.

        Returns:
            (rows, index): `rows` (U, L, D) is `crossattn_proj` on the prompt embeddings of the U distinct
            instructions and `index` (B,) the row of each sample, for the video DiT's forward to gather its
            text K/V per sample (`fast_paths.RowGather`); gradients reach the weights summed per instruction.
            With U = B, or the `instruction_gather` fast path off, `rows` is (B, L, D) and `index` None.
        """
        gather = fast_paths.enabled("instruction_gather")
        unique = list(dict.fromkeys(prompts)) if gather else list(prompts)
        rows = self.crossattn_proj(self.encode_prompts(unique))  # (U, L, D)
        if len(unique) == len(prompts):
            return rows, None
        position = {p: i for i, p in enumerate(unique)}
        return rows, torch.tensor([position[p] for p in prompts], device=rows.device)

    def project_prompts(self, prompts: list[str]) -> dict[str, Tensor]:
        """instruction -> (L, D) projected context for every instruction in `prompts`, for shipping."""
        return dict(zip(prompts, self.text_context(prompts), strict=True))


PROJECTION_PREFIX = "video.transformer.crossattn_proj."  # its parameters' names in the policy's state dict


def projection_weights(policy, state_dict: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The video DiT's `crossattn_proj` parameters by local name: from `state_dict` (a full state dict of the
    policy) when given, else from the module."""
    if state_dict is None:
        return policy.video.crossattn_proj.state_dict()
    return {k[len(PROJECTION_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(PROJECTION_PREFIX)}


def projection_sha256(policy, state_dict: dict[str, Tensor] | None = None) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the video DiT's `crossattn_proj` parameters."""
    digest = hashlib.sha256()
    for name, tensor in sorted(projection_weights(policy, state_dict).items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_text_conditioning(
    policy, directory: str | Path, instructions=None, state_dict: dict[str, Tensor] | None = None
) -> Path | None:
    """Write the projected context of `instructions` (default: every instruction this policy has encoded or
    holds shipped) to `directory/FILENAME`; returns the file, or None when there is nothing to write.

    With `state_dict` (the full state dict being saved, as LeRobot passes under FSDP), the projection uses its
    weights rather than the module's, which may be shards of a sharded model on this rank."""
    video = policy.video
    if instructions is None:
        instructions = list(dict.fromkeys([*video.cached_prompts(), *video.shipped_instructions()]))
    path = Path(directory) / FILENAME
    if not instructions:
        return None
    if state_dict is None:
        contexts = video.project_prompts(list(instructions))
    else:
        # Instructions with cached embeddings are projected with the saved weights; shipped ones without
        # embeddings keep their shipped context (no text encoder needed, no projection run).
        cached = set(video.cached_prompts())
        fresh = [p for p in instructions if p in cached]
        rest = [p for p in instructions if p not in cached]
        contexts = video.project_prompts(rest) if rest else {}
        if fresh:
            with torch.no_grad():
                embeds = video.encode_prompts(fresh)
                weights = projection_weights(policy, state_dict)
                weights = {k: v.to(embeds.device, embeds.dtype) for k, v in weights.items()}
                projected = torch.func.functional_call(video.crossattn_proj, weights, (embeds,))
            contexts.update(zip(fresh, projected, strict=True))
    dtype = DTYPES[policy.config.dtype]
    tensors = {f"context.{i}": contexts[p].to("cpu", dtype).contiguous() for i, p in enumerate(instructions)}
    cfg = policy.config
    metadata = {
        "format": FORMAT,
        "instructions": json.dumps(list(instructions)),
        "max_prompt_tokens": str(cfg.max_prompt_tokens),
        "base_model": cfg.base_model,
        "base_model_revision": str(cfg.base_model_revision),
        "projection_sha256": projection_sha256(policy, state_dict),
        "dtype": cfg.dtype,
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_text_conditioning(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(instruction -> (L, D) context, metadata) of a shipped file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(
                    f"DiT4DiT: {path} is not a dit4dit text-conditioning file ({metadata.get('format')})."
                )
            instructions = json.loads(metadata["instructions"])
            contexts = {p: f.get_tensor(f"context.{i}") for i, p in enumerate(instructions)}
    except ValueError:
        raise
    except Exception as e:  # safetensors' own errors, a bad JSON list, a missing context
        raise ValueError(f"DiT4DiT: cannot read {path}: {e!r}. The file is damaged.") from e
    return contexts, metadata


def load_text_conditioning(policy, path: str | Path) -> list[str]:
    """Install a shipped file on `policy` after checking it belongs to these weights; return its instructions.

    Raises:
        ValueError when the file was made for other projection weights or another `max_prompt_tokens`.
    """
    contexts, metadata = read_text_conditioning(path)
    cfg = policy.config
    if int(metadata["max_prompt_tokens"]) != cfg.max_prompt_tokens:
        raise ValueError(
            f"DiT4DiT: {path} was made with max_prompt_tokens={metadata['max_prompt_tokens']}, this config "
            f"has {cfg.max_prompt_tokens}."
        )
    if metadata["projection_sha256"] != projection_sha256(policy):
        raise ValueError(
            f"DiT4DiT: {path} was computed with other text-projection weights than this checkpoint's "
            "model.safetensors (hash mismatch); re-create it with "
            "dit4dit-text-conditioning."
        )
    device = policy.video.latents_mean.device
    policy.video.ship_text_context({p: c.to(device) for p, c in contexts.items()})
    return list(contexts)
