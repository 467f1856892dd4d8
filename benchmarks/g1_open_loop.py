"""Open-loop fit of a trained policy on its own G1 recordings, and how much of it comes from the image.

    python -m benchmarks.g1_open_loop \\
        --policy outputs/g1/dit4dit/train/checkpoints/last/pretrained_model --data outputs/g1/data

On `--frames` random recorded frames it compares the policy's action chunk with the recorded (expert) chunk,
three ways: the policy as recorded; the policy given another random frame's image with its own joints ("image
swapped": what the policy gains from the image is lost); and holding the current joints for the whole chunk
("hold": a policy that learned nothing). Errors are in radians, over the chunk's un-padded steps and every
action joint. Prints a table and writes a JSON next to it with `--json`.

`--probe N` (dit4dit only) also asks whether the button's place in the image survives the frozen VAE and the
video DiT: on N recorded frames it fits ridge regressions (3/4 of the frames, best of a few penalties on the
other 1/4) from the pixels, the VAE latent of the frame, and the current-frame tokens of the block-
`extract_layer` features to the centroid of the red pixels (the button), and prints the held-out error in
pixels and R^2.

`--video-loss N` (dit4dit only) asks how well the video DiT predicts the recorded future: its video flow-
matching loss on N recorded clips, with the same flow times and noise for every checkpoint (seeded from
`--seed` and the clip's place in the draw), so two checkpoints' figures compare clip for clip. With
`--episodes` the frames come from those episodes only, e.g. the demonstrations a k-demonstration cell did not
train on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lerobot_dit4dit.inputs import tile_cameras


def load_policy(path: Path, device: str = "cpu"):
    """A trained LeRobot policy and its pre/post processors, from a `pretrained_model` folder."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cfg = PreTrainedConfig.from_pretrained(path)
    cfg.device = device
    policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg).eval()
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(path))
    return policy, pre, post


def recorded(repo_id: str, data: Path, episodes: list[int] | None = None, offsets: dict | None = None):
    """The recorded LeRobotDataset at `data`, restricted to `episodes` (None: all), with each key of
    `offsets` loaded at those frame offsets (converted to timestamps at the recording's fps)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    fps = LeRobotDatasetMetadata(repo_id, root=data).fps
    return LeRobotDataset(
        repo_id,
        root=data,
        episodes=episodes,
        video_backend="pyav",
        delta_timestamps={k: [i / fps for i in v] for k, v in (offsets or {}).items()} or None,
    )


def _chunk(policy, pre, post, obs: dict) -> np.ndarray:
    """(H, A) unnormalised action chunk the policy predicts for one unbatched observation."""
    policy.reset()
    batch = pre(obs)
    with torch.no_grad():
        chunk = policy.predict_action_chunk(batch)  # (1, H, A) normalised
    return post(chunk)[0].float().cpu().numpy()


def open_loop(
    policy_path: Path,
    data: Path,
    frames: int = 60,
    seed: int = 0,
    repo_id: str = "local/g1_button",
    episodes: list[int] | None = None,
) -> dict:
    """Mean and first-steps errors of the policy, image-swapped policy and hold baseline (see module doc)."""
    policy, pre, post = load_policy(policy_path)
    horizon = policy.config.chunk_size
    ds = recorded(repo_id, data, episodes, {"action": range(horizon)})
    state_names = ds.meta.features["observation.state"]["names"]
    action_names = ds.meta.features["action"]["names"]
    # Hold baseline: each action joint stays at its measured position (`.pos` names on both sides).
    hold_index = [state_names.index(n) for n in action_names]
    image_keys = [k for k in ds.meta.features if k.startswith("observation.images.")]

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ds), size=min(frames, len(ds)), replace=False)
    donors = rng.permutation(picks)
    errors = {"policy": [], "image swapped": [], "hold": []}
    first = {k: [] for k in errors}
    for n, (i, j) in enumerate(zip(picks, donors, strict=True)):
        item, donor = ds[int(i)], ds[int(j)]
        target = item["action"].numpy()  # (H, A)
        valid = ~item["action_is_pad"].numpy()
        obs = {k: v for k, v in item.items() if k.startswith("observation.")}
        obs["task"] = item["task"]
        swapped = {**obs, **{k: donor[k] for k in image_keys}}
        hold = np.repeat(item["observation.state"].numpy()[hold_index][None], horizon, axis=0)
        for name, pred in (
            ("policy", _chunk(policy, pre, post, obs)),
            ("image swapped", _chunk(policy, pre, post, swapped)),
            ("hold", hold),
        ):
            err = np.abs(pred[:horizon] - target)[valid]
            errors[name].append(float(err.mean()))
            first[name].append(float(err[:2].max()))
        if (n + 1) % 10 == 0:
            print(f"[open loop] {n + 1}/{len(picks)} frames", flush=True)
    return {
        "frames": len(picks),
        "seed": seed,
        "chunk_mae_rad": {k: float(np.mean(v)) for k, v in errors.items()},
        "first_2_max_joint_error_median_rad": {k: float(np.median(v)) for k, v in first.items()},
    }


def video_fit(
    policy_path: Path,
    data: Path,
    clips: int = 60,
    seed: int = 0,
    repo_id: str = "local/g1_button",
    episodes: list[int] | None = None,
) -> dict:
    """Video flow-matching loss of a dit4dit checkpoint on recorded clips (see module doc).

    The loss is the policy's own (`DiT4DiTPolicy.forward` with `training_mode=video`), on clips the VAE
    encodes here (no latent cache), each with its explicit `ForwardNoise` from a generator seeded by
    (seed, clip).
    """
    policy, pre, _ = load_policy(policy_path)
    cfg = policy.config
    if cfg.type != "dit4dit":
        raise ValueError(f"--video-loss reads dit4dit's video loss; {policy_path} is a {cfg.type}.")
    # Only the video loss, from frames decoded here: the cache the checkpoint trained on may not cover `data`.
    cfg.training_mode, cfg.latent_cache = "video", None
    ds = recorded(repo_id, data, episodes, dict.fromkeys(cfg.cameras, cfg.video_frame_indices))
    rng = np.random.default_rng(seed)
    losses, drawn_from = [], []
    with torch.no_grad():
        for n, i in enumerate(rng.choice(len(ds), size=min(clips, len(ds)), replace=False)):
            item = ds[int(i)]
            drawn_from.append(int(item["episode_index"]))
            # Batched by hand: the pipeline's batch step would read a clip (T, C, H, W) as T images.
            obs = {k: v[None] for k, v in item.items() if k.startswith("observation.")}
            obs["task"] = [item["task"]]
            noise = policy.draw_noise(1, torch.Generator().manual_seed(seed * 1_000_003 + n))
            _, info = policy.forward(pre(obs), noise=noise)
            losses.append(info["video_loss"])
            if (n + 1) % 10 == 0:
                print(f"[video fit] {n + 1}/{min(clips, len(ds))} clips", flush=True)
    losses = np.array(losses)
    return {
        "clips": len(losses),
        "seed": seed,
        "video_loss_mean": float(losses.mean()),
        # Standard error of the mean over clips: the draws are the same for every checkpoint, so two
        # checkpoints' means differ by more than this only where their fit does.
        "video_loss_sem": float(losses.std(ddof=1) / np.sqrt(len(losses))) if len(losses) > 1 else None,
        "per_clip": losses.tolist(),
        "episodes": sorted(set(drawn_from)),
    }


def ridge_weights(a: np.ndarray, b: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge weights (F, K) minimising |a w - b|^2 + penalty |w|^2, for a (N, F) and b (N, K).

    The primal form solves an (F, F) system and the dual form w = a^T (a a^T + penalty I)^-1 b an (N, N) one;
    both give the same w. Probes of pixels or features have F >> N (12,288 pixels at 64 px), where the
    primal solve took over a minute for 12 frames, so the smaller system is solved.
    """
    n, f = a.shape
    if f <= n:
        return np.linalg.solve(a.T @ a + penalty * np.eye(f), a.T @ b)
    return a.T @ np.linalg.solve(a @ a.T + penalty * np.eye(n), b)


def _ridge_probe(x: np.ndarray, y: np.ndarray, penalties=(1.0, 10.0, 100.0, 1000.0)) -> dict:
    """Held-out fit of y (N, 2) from x (N, F) by ridge regression on standardised x: the best penalty's
    mean absolute error per output and R^2 per output on the last quarter."""
    n = len(x)
    split = int(0.75 * n)
    mu, sd = x[:split].mean(0), x[:split].std(0) + 1e-6
    xs, y_mean = (x - mu) / sd, y[:split].mean(0)
    a, b = xs[:split], y[:split] - y_mean
    best = None
    for lam in penalties:
        pred = xs[split:] @ ridge_weights(a, b, lam) + y_mean
        resid = pred - y[split:]
        r2 = 1 - (resid**2).sum(0) / ((y[split:] - y[split:].mean(0)) ** 2).sum(0)
        fit = {"penalty": lam, "mae_px": np.abs(resid).mean(0).tolist(), "r2": r2.tolist()}
        if best is None or np.mean(fit["r2"]) > np.mean(best["r2"]):
            best = fit
    return best


def button_probe(
    policy_path: Path,
    data: Path,
    frames: int = 600,
    seed: int = 0,
    repo_id: str = "local/g1_button",
    episodes: list[int] | None = None,
):
    """Linear probes of the button's image centroid (x, y) from pixels, VAE latent and features."""
    policy, pre, _ = load_policy(policy_path)
    if policy.config.type != "dit4dit":
        raise ValueError(
            f"--probe reads dit4dit's VAE latents and features; {policy_path} is a {policy.config.type}."
        )
    ds = recorded(repo_id, data, episodes)
    (camera,) = policy.config.cameras[:1]
    rng = np.random.default_rng(seed)
    inputs = {"pixels": [], "VAE latent": [], "features, current-frame tokens": []}
    centroids = []
    with torch.no_grad():
        for i in rng.choice(len(ds), size=min(frames, len(ds)), replace=False):
            item = ds[int(i)]
            r, g, b = item[camera]  # (H, W) each, in [0, 1]
            ys, xs = torch.nonzero((r > 0.6) & (g < 0.3) & (b < 0.3), as_tuple=True)
            if len(xs) < 3:  # the button is hidden (under the hand) or out of view
                continue
            centroids.append([xs.float().mean().item(), ys.float().mean().item()])
            obs = {k: v for k, v in item.items() if k.startswith("observation.")}
            obs["task"] = item["task"]
            batch = pre(obs)
            video = tile_cameras(batch, policy.config)[:, :, :1]
            latent = policy.video.encode_video(video)  # (1, 16, 1, h, w)
            features = policy.extract_features(latent, policy.video.encode_prompts(batch["task"]))
            inputs["pixels"].append(item[camera].flatten().numpy())
            inputs["VAE latent"].append(latent.flatten().numpy())
            current = policy.video.current_frame_tokens(features, latent)[0]
            inputs["features, current-frame tokens"].append(current.flatten().float().numpy())
    y = np.array(centroids)
    return {
        "frames": len(y),
        "centroid_std_px": y.std(0).tolist(),
        "probes": {k: _ridge_probe(np.array(v), y) for k, v in inputs.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="a pretrained_model folder")
    parser.add_argument("--data", type=Path, required=True, help="the LeRobot dataset root it was trained on")
    parser.add_argument("--repo-id", default="local/g1_button")
    parser.add_argument("--frames", type=int, default=60, help="frames of the open-loop fit (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--probe", type=int, default=0, help="frames for the button-position probes (0: none)"
    )
    parser.add_argument(
        "--episodes",
        type=int,
        nargs="+",
        default=None,
        help="draw every fit's and probe's frames from these episodes only (default: all)",
    )
    parser.add_argument(
        "--video-loss", type=int, default=0, help="clips for the video-loss fit (dit4dit only; 0: none)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"[open loop] torch threads: {torch.get_num_threads()}", flush=True)
    result = {}
    if args.frames:
        result = open_loop(args.policy, args.data, args.frames, args.seed, args.repo_id, args.episodes)
        head = f"{result['frames']} frames, seed {args.seed}"
        print(f"| {head} | chunk error (rad) | first 2 actions, median max (rad) |")
        print("|---|---|---|")
        for k, v in result["chunk_mae_rad"].items():
            print(f"| {k} | {v:.4f} | {result['first_2_max_joint_error_median_rad'][k]:.3f} |")
    if args.video_loss:
        result["video_fit"] = fit = video_fit(
            args.policy, args.data, args.video_loss, args.seed, args.repo_id, args.episodes
        )
        sem = fit["video_loss_sem"]  # None for a single clip
        spread = f" (standard error {sem:.4f})" if sem is not None else ""
        print(f"video loss on {fit['clips']} clips, seed {args.seed}: {fit['video_loss_mean']:.4f}{spread}")
    if args.probe:
        result["button_probe"] = probe = button_probe(
            args.policy, args.data, args.probe, args.seed, args.repo_id, args.episodes
        )
        print(
            f"| button centroid from ({probe['frames']} frames; "
            f"std {np.round(probe['centroid_std_px'], 1)} px) "
            "| held-out error (x, y) px | R^2 (x, y) |"
        )
        print("|---|---|---|")
        for k, v in probe["probes"].items():
            print(f"| {k} | {np.round(v['mae_px'], 2)} | {np.round(v['r2'], 3)} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
