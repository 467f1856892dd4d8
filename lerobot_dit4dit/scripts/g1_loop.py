"""dit4dit-g1-loop: the offline G1 loop, record -> train -> rollout.

Its --help is the documentation of `lerobot_dit4dit.sim.g1_loop`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from lerobot_dit4dit.sim.g1_loop import (
    PRESET,
    REPO_ID,
    act_flags,
    bridge,
    build_base,
    dit4dit_flags,
    encode_latents,
    measure_expert,
    presses_per_minute,
    record,
    rollout_command,
    run_cli,
    train_flags,
)
from lerobot_dit4dit.sim.scene_client import SceneClient
from lerobot_dit4dit.teleoperators.g1_scripted_expert import G1ScriptedExpertConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=sys.modules["lerobot_dit4dit.sim.g1_loop"].__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/g1"))
    parser.add_argument("--policy", choices=["dit4dit", "act"], default="dit4dit")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--episode-s", type=float, default=15.0)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's resolution")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--rollout-minutes", type=float, default=3.0)
    parser.add_argument("--inference", choices=["rtc", "sync"], default=None, help="default: rtc for dit4dit")
    parser.add_argument(
        "--queue-threshold",
        type=int,
        default=None,
        help="RTC: plan a new chunk when this many actions are left (default: chunk_size - n_action_steps, "
        "so each chunk's first n_action_steps run as in training; LeRobot's default 30 re-plans every tick)",
    )
    parser.add_argument(
        "--rtc-execution-horizon",
        type=int,
        default=None,
        help="RTC: how many leading actions of a new chunk are guided towards what is left of the previous "
        "one (default: the preset's n_action_steps; see docs/unitree_g1_sim.md, run 10)",
    )
    parser.add_argument(
        "--rollout-threads",
        type=int,
        default=1,
        help="torch threads of the rollout process (default 1: the simulator shares this machine's cores; "
        "with two threads a chunk took 2-5 control ticks, with one 2-3)",
    )
    parser.add_argument(
        "--latent-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dit4dit: encode the recordings once with the frozen VAE (lerobot_dit4dit.latent_cache)"
        " and train on those latents; the build counts in train_minutes (default: on)",
    )
    parser.add_argument("--variant", choices=["capsules", "meshes"], default="capsules")
    parser.add_argument("--seed", type=int, default=0, help="scene seed of the evaluation rollouts")
    args = parser.parse_args(argv)

    preset = json.loads(PRESET.read_text())
    size = args.image_size or preset["policy"]["image_resolution"][0]
    steps = args.steps or preset["steps"]
    batch_size = args.batch_size or preset["batch_size"]
    inference = args.inference or ("rtc" if args.policy == "dit4dit" else "sync")
    queue_threshold = args.queue_threshold
    if queue_threshold is None:
        queue_threshold = preset["policy"]["chunk_size"] - preset["policy"]["n_action_steps"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    data = out / "data"
    result: dict = {"policy": args.policy, "episodes": args.episodes, "image_size": size, "fps": args.fps}

    # The expert's settings are part of the recordings' (a changed expert records again).
    data_settings = {"episodes": args.episodes, "episode_s": args.episode_s, "fps": args.fps, "size": size}
    # The loop records the press behaviour, which the wander settings do not act on: recordings made before
    # those existed stay valid.
    expert = dataclasses.asdict(G1ScriptedExpertConfig())
    data_settings["expert"] = {
        k: v for k, v in expert.items() if k != "behaviour" and not k.startswith("wander")
    }
    data_stamp = out / "data_settings.json"
    have_data = data_stamp.exists() and json.loads(data_stamp.read_text()) == data_settings
    expert_file = out / "expert.json"
    if not have_data or not expert_file.exists():
        with bridge(size, args.variant, log=logs / "bridge_record.log"):
            scene = SceneClient()
            if not expert_file.exists() or not have_data:
                print(f"[g1] expert: lerobot-teleoperate for {args.rollout_minutes} min", flush=True)
                rate, metrics = measure_expert(
                    scene, size, args.fps, args.rollout_minutes, args.seed, logs / "expert.log"
                )
                expert_file.write_text(json.dumps({"presses_per_minute": rate, **metrics}))
            if not have_data:
                print(
                    f"[g1] recording {args.episodes} x {args.episode_s} s episodes at {args.fps} fps",
                    flush=True,
                )
                data_stamp.unlink(missing_ok=True)
                # From the start pose, as every rollout starts: the robot locks the joints it does not drive
                # at its connect pose, so recording where an earlier connect left it records another torso
                # pose (another camera view) than the rollouts see.
                scene.reset(args.seed + 1)
                record(data, args.episodes, args.episode_s, args.fps, size, logs / "record.log")
                data_stamp.write_text(json.dumps(data_settings))
            scene.close()
    result["expert_presses_per_minute"] = json.loads(expert_file.read_text())["presses_per_minute"]

    run_dir = out / args.policy
    ckpt = run_dir / "train" / "checkpoints" / "last" / "pretrained_model"
    # The preset is part of the settings: editing it retrains. The stamp also holds train_minutes, which is
    # not a setting, so only the settings' keys are compared (a trained model is never thrown away for it).
    train_settings = {**data_settings, "steps": steps, "batch_size": batch_size}
    if args.policy == "dit4dit":
        train_settings["preset"] = preset
        train_settings["latent_cache"] = args.latent_cache
    train_stamp = run_dir / "train_settings.json"
    stamped = json.loads(train_stamp.read_text()) if train_stamp.exists() else {}
    if {k: stamped.get(k) for k in train_settings} != train_settings:
        train_stamp.unlink(missing_ok=True)
        shutil.rmtree(run_dir / "train", ignore_errors=True)
        # The preset's one data worker decodes the next batch during the step.
        common = train_flags(data, run_dir / "train", steps, batch_size, preset["num_workers"])
        if args.policy == "dit4dit" and preset["policy"].get("use_relative_actions"):
            # The preset predicts actions relative to the current joints: LeRobot normalises them with action
            # statistics computed in that space, on a copy of the recordings.
            train_data = out / "data_relative"
            shutil.rmtree(train_data, ignore_errors=True)
            run_cli(
                [
                    "lerobot-edit-dataset",
                    f"--repo_id={REPO_ID}",
                    f"--root={data}",
                    f"--new_repo_id={REPO_ID}",
                    f"--new_root={train_data}",
                    "--operation.type=recompute_stats",
                    "--operation.relative_action=true",
                    f"--operation.chunk_size={preset['policy']['chunk_size']}",
                ],
                logs / "relative_stats.log",
            )
            common = [
                f"--dataset.root={train_data}" if a.startswith("--dataset.root=") else a for a in common
            ]
        if args.policy == "dit4dit":
            base = out / "base"
            if not (base / "model_index.json").exists():
                print("[g1] building the small Cosmos-shaped base (random weights)", flush=True)
            build_base(base)
            cmd = ["lerobot-train", *dit4dit_flags(base, size, steps), *common]
            cache_s = 0.0
            if args.latent_cache:
                # The VAE is frozen and the recordings are not augmented: their latents never change, and
                # encoding them was most of a step of this small model (docs/unitree_g1_sim.md).
                latents = out / "latents.safetensors"
                print(f"[g1] encoding the recordings' latents once: {latents}", flush=True)
                cache_s = encode_latents(latents, cmd[1:], logs / "latent_cache.log")
                cmd.append(f"--policy.latent_cache={latents}")
        else:
            cmd = [
                "lerobot-train",
                *act_flags(preset["policy"]["chunk_size"], preset["policy"]["n_action_steps"]),
                *common,
            ]
        print(f"[g1] training {args.policy}: {steps} steps at batch {batch_size}", flush=True)
        train_s = run_cli(cmd, logs / f"train_{args.policy}.log")
        if args.policy == "dit4dit":
            train_settings["latent_cache_minutes"] = cache_s / 60
            train_s += cache_s
        train_settings["train_minutes"] = train_s / 60
        train_stamp.write_text(json.dumps(train_settings))
    result["train_minutes"] = json.loads(train_stamp.read_text()).get("train_minutes")
    result["steps"], result["batch_size"] = steps, batch_size

    print(f"[g1] rollout {args.policy} ({inference}) for {args.rollout_minutes} min", flush=True)
    with bridge(size, args.variant, seed=args.seed, log=logs / f"bridge_rollout_{args.policy}.log"):
        scene = SceneClient()
        horizon = None
        if inference == "rtc":
            # RTC pulls a new chunk's first `execution_horizon` actions towards what is left of the previous
            # one, those before the inference delay with full weight. LeRobot's delay is the largest latency
            # seen so far, so one slow chunk freezes every later chunk's first actions; guiding the whole
            # overlap (6 of 8 steps) then replays the old plan for about a press cycle after the button
            # moves. Guiding only the steps that run while the next chunk is computed keeps the seam smooth
            # and lets each chunk act on its own observation.
            horizon = args.rtc_execution_horizon or preset["policy"]["n_action_steps"]
        rollout = rollout_command(
            ckpt, size, args.fps, args.rollout_minutes * 60, inference, queue_threshold, horizon
        )
        rate, metrics = presses_per_minute(
            scene,
            lambda: run_cli(rollout, logs / f"rollout_{args.policy}.log", threads=args.rollout_threads),
            args.seed,
            args.rollout_minutes * 60,
        )
        scene.close()
    result.update(
        inference=inference,
        queue_threshold=queue_threshold if inference == "rtc" else None,
        rtc_execution_horizon=horizon,
        rollout_threads=args.rollout_threads,
        presses_per_minute=rate,
        rollout_minutes=args.rollout_minutes,
        commands=metrics["commands"],
        commands_outside_limits=metrics["commands_outside_limits"],
        max_command_step=metrics["max_command_step"],
    )
    (out / f"result_{args.policy}.json").write_text(json.dumps(result, indent=2))
    print(
        f"presses_per_minute={rate:.1f} expert={result['expert_presses_per_minute']:.1f} "
        f"episodes={args.episodes} train_minutes={result['train_minutes']:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
