"""The policy on `--device` (default cpu; scripts/gpu_check.sh passes cuda), each check against a separate
policy built the same way and run on the CPU: a training step, an action chunk, bf16 inference, and a
save/load round trip on the device."""

from __future__ import annotations

import torch
from utils import inference_batch, train_batch

from lerobot_dit4dit import DiT4DiTPolicy


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _tolerance(device: torch.device) -> dict:
    # The same ops on the CPU are bit-equal; on CUDA, cuDNN runs the VAE's float32 convolutions in TF32 by
    # default (torch.backends.cudnn.allow_tf32; 10-bit mantissa) and kernels sum in other orders.
    return {"rtol": 0, "atol": 0} if device.type == "cpu" else {"rtol": 2e-2, "atol": 2e-2}


def _chunk(policy: DiT4DiTPolicy, batch: dict, device: torch.device) -> torch.Tensor:
    """An action chunk (B, chunk_size, action_dim) with every random draw fixed on the CPU, then moved."""
    cfg, bsz = policy.config, len(batch["task"])
    noise = torch.randn((bsz, cfg.chunk_size, cfg.max_action_dim), generator=torch.Generator().manual_seed(3))
    feature = torch.randn(policy.noise_shapes(bsz)["feature"], generator=torch.Generator().manual_seed(4))
    batch, noise, feature = _to(batch, device), noise.to(device), feature.to(device)
    return policy.predict_action_chunk(batch, noise=noise, feature_noise=feature).cpu()


def test_training_step_on_device(make_policy, device):
    reference, policy = make_policy(), make_policy().to(device)
    batch = train_batch(reference.config, batch_size=2)
    noise = reference.draw_noise(2, torch.Generator().manual_seed(3))
    losses, grads = [], []
    for p, dev in ((reference, torch.device("cpu")), (policy, device)):
        p.eval()  # dropout would draw from each device's own RNG
        loss, info = p(_to(batch, dev), noise=noise.to(dev))
        loss.backward()
        assert set(info) == {"action_loss", "video_loss"}
        losses.append(loss.detach().cpu())
        grads.append({n: q.grad.cpu() for n, q in p.named_parameters() if q.grad is not None})
    torch.testing.assert_close(losses[1], losses[0], **_tolerance(device))
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], **_tolerance(device), msg=name)


def test_action_chunk_on_device(make_policy, device):
    reference, policy = make_policy(), make_policy().to(device)
    batch = inference_batch(batch_size=2)
    chunks = [_chunk(reference, batch, torch.device("cpu")), _chunk(policy, batch, device)]
    assert chunks[1].shape == (2, reference.config.chunk_size, reference.config.action_dim)
    torch.testing.assert_close(chunks[1], chunks[0], **_tolerance(device))


def test_bf16_chunk_and_round_trip_on_device(make_policy, device, tmp_path):
    """bf16 inference on the device (weights cast once) stays near fp32, and a checkpoint saved from the
    device loads onto it and gives the same chunk."""
    policy = make_policy().to(device)
    batch = inference_batch(batch_size=2)
    fp32 = _chunk(policy, batch, device)
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = DiT4DiTPolicy.from_pretrained(tmp_path / "ckpt").to(device)
    # Same weights, same device, same ops: bit-equal.
    torch.testing.assert_close(_chunk(loaded, batch, device), fp32, rtol=0, atol=0)
    loaded.config.dtype = "bfloat16"
    bf16 = _chunk(loaded, batch, device)
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.004) through the video DiT, the features and the
    # denoising steps; the tolerance of the project's bf16 parity checks (docs/speed.md).
    assert bf16.isfinite().all()
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.1)


def test_gpu_check_refuses_a_machine_without_cuda(tmp_path):
    """scripts/gpu_check.sh stops at once, naming the reason, where torch sees no CUDA device."""
    import subprocess

    import pytest
    from utils import ROOT

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: scripts/gpu_check.sh would run the checks")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "sees no CUDA device" in proc.stderr
    assert not any(tmp_path.iterdir())  # no stage ran
