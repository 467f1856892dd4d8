"""dit4dit's training step under FSDP2 (`torch.distributed.fsdp.fully_shard`) over gloo (tests/test_fsdp.py).

    python -m torch.distributed.run --nproc_per_node=2 tests/helpers/fsdp_step.py --base <base> --out <dir>
    python tests/helpers/fsdp_step.py --base <base> --out <dir>          # the unsharded reference

Every rank builds the same policy (same seed), shards each block class the policy names in
`_no_split_modules`, then the rest of the policy with the frozen VAE left out (`ignored_params`), and trains
`--steps` AdamW steps on its half of one fixed batch with fixed noise. Alone, the same script trains the
unsharded policy on the whole batch. Rank 0 writes `grads.safetensors` (step 1's full gradients),
`sharded.json` (which blocks became FSDP units), and the trained policy with `save_pretrained`.

Why not Accelerate: Accelerate 1.16 selects FSDP only on accelerator devices (`accelerate/state.py`: the FSDP
branch applies to the MULTI_GPU-like types; on CPU the launcher picks MULTI_CPU, which is DDP). Why not FSDP1:
LeRobot's gather of an FSDP1 state dict (`gather_fsdp_state_dicts`) crashes rank 0 (SIGSEGV) on CPU/gloo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/utils.py

from utils import tiny_config, train_batch  # noqa: E402

from lerobot_dit4dit import DiT4DiTPolicy  # noqa: E402

BATCH = 4


def shard(policy: DiT4DiTPolicy) -> list[str]:
    """FSDP2 units: every module whose class the policy names, then the root without the VAE."""
    from torch.distributed.fsdp import fully_shard

    units = [n for n, m in policy.named_modules() if type(m).__name__ in policy._no_split_modules]
    for name in units:
        fully_shard(policy.get_submodule(name))
    fully_shard(policy, ignored_params=set(policy.video.vae.parameters()))
    return units


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor shard (a collective), or the tensor itself."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    # One action-noise draw per sample, so a rank's rows of every draw are its samples' rows.
    cfg = tiny_config(args.base, num_action_noise_draws=1)
    policy = DiT4DiTPolicy(cfg)
    # Eval mode: dropout draws from each process's own RNG, outside `ForwardNoise`, so the halves of a
    # sharded run would not see the draws of the whole batch. Gradients flow the same in both modes.
    policy.eval()
    units = shard(policy) if world > 1 else []
    batch = train_batch(cfg, batch_size=BATCH, seed=0)
    batch["task"] = ["move the black dot to the red disc"] * BATCH
    noise = policy.draw_noise(BATCH, torch.Generator().manual_seed(1))
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    batch = {k: v[rows] for k, v in batch.items()}
    for field in ("feature", "video_time", "video", "action", "action_beta"):
        setattr(noise, field, getattr(noise, field)[rows])
    optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=1e-3, weight_decay=0.0)
    losses = []
    for step in range(args.steps):
        loss, _ = policy(batch, noise=noise)
        loss.backward()
        if step == 0:
            named = policy.named_parameters()
            grads = {n: full(p.grad).detach().clone() for n, p in named if p.grad is not None}
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    if world > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # Every rank takes part; with cpu_offload only rank 0 holds the full tensors.
        state = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        gathered = [None] * world
        dist.all_gather_object(gathered, losses)
        losses = [sum(step) / world for step in zip(*gathered, strict=True)]
    else:
        state = None
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in grads.items()}, args.out / "grads.safetensors")
        (args.out / "sharded.json").write_text(json.dumps({"units": units, "losses": losses}))
        (args.out / "policy").mkdir()
        policy._save_pretrained(args.out / "policy", state_dict=state)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
