"""Latency budget of the two ways to run a dit4dit policy on the simulated G1: LeRobot's async inference
(`python -m lerobot_dit4dit.serve` + LeRobot's robot client) and `lerobot-rollout` with RTC (in process).

    python -m benchmarks.async_latency --checkpoint <G1 pretrained_model> --image-size 64 --fps 15

It starts the simulator and the policy server, connects LeRobot's `RobotClient` (with its real robot), and
times, over `--chunks` observations of the running simulator:
- the gRPC round trip of an empty call (`Ready`): the network's share;
- an observation's round trip to its action chunk (`SendObservations` then `GetActions`): what the client
  waits for. The server's own part (preprocess, predict, postprocess) is read from its log;
- the same chunk in process, as `lerobot-rollout --inference.type=rtc` computes it (pre/post processors and
  `predict_action_chunk` with RTC guidance on the previous chunk).

The budget of async inference: the client asks for a chunk when its queue falls to
`chunk_size_threshold * actions_per_chunk` actions, so the round trip must stay under
`threshold * actions_per_chunk / fps` seconds or the robot waits. The budget of RTC is in docs/unitree_g1.md;
the delay RTC is given for a chunk is `ceil(latency * fps)` control steps. Prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Wait until the server listens (it imports LeRobot and torch first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"the policy server is not listening on {port}; {log}:\n{tail}")
        time.sleep(0.2)


def _ms(values: list[float]) -> dict:
    return {"median_ms": round(1000 * statistics.median(values), 1), "max_ms": round(1000 * max(values), 1)}


def in_process_chunks(checkpoint: Path, observations: list[dict], features: dict, n_steps: int) -> list:
    """Seconds per chunk as `lerobot-rollout` with RTC computes it, on raw robot observations."""
    from lerobot.async_inference.helpers import raw_observation_to_observation
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    cfg = PreTrainedConfig.from_pretrained(checkpoint)
    cfg.rtc_config = RTCConfig(enabled=True, execution_horizon=n_steps)
    policy = get_policy_class(cfg.type).from_pretrained(checkpoint, config=cfg)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(checkpoint))
    times, previous = [], None
    for raw in observations:
        start = time.perf_counter()
        obs = pre(raw_observation_to_observation(raw, features, policy.config.image_features))
        chunk = policy.predict_action_chunk(
            obs, inference_delay=1, prev_chunk_left_over=previous, execution_horizon=n_steps
        )
        post(chunk[:, 0])
        times.append(time.perf_counter() - start)
        previous = chunk[:, n_steps:]
    return times


def measure(args: argparse.Namespace) -> dict:
    import grpc
    from lerobot.async_inference.configs import RobotClientConfig
    from lerobot.async_inference.helpers import TimedObservation
    from lerobot.async_inference.robot_client import RobotClient
    from lerobot.cameras.zmq.configuration_zmq import ZMQCameraConfig
    from lerobot.transport import services_pb2

    from lerobot_dit4dit.robots.unitree_g1_dit4dit import UnitreeG1Dit4ditConfig
    from lerobot_dit4dit.sim.g1_loop import CAMERA, TASK, bridge

    workdir = Path(tempfile.mkdtemp(prefix="dit4dit_async_"))
    port = _free_port()
    camera = ZMQCameraConfig(
        server_address="127.0.0.1", port=5555, camera_name=CAMERA, width=args.image_size,
        height=args.image_size, fps=args.fps,
    )  # fmt: skip
    server_log = workdir / "server.log"
    with bridge(args.image_size, log=workdir / "bridge.log"), open(server_log, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "lerobot_dit4dit.serve", "--host=127.0.0.1", f"--port={port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        try:
            wait_for_port(port, server, server_log)
            cfg = RobotClientConfig(
                robot=UnitreeG1Dit4ditConfig(mode="arm", cameras={CAMERA: camera}),
                policy_type="dit4dit",
                pretrained_name_or_path=str(args.checkpoint),
                actions_per_chunk=args.actions_per_chunk,
                chunk_size_threshold=args.threshold,
                fps=args.fps,
                task=TASK,
                server_address=f"127.0.0.1:{port}",
            )
            client = RobotClient(cfg)
            start = time.perf_counter()
            if not client.start():
                raise RuntimeError(f"the policy server did not answer; {server_log}")
            load_s = time.perf_counter() - start
            rtt = []
            for _ in range(args.chunks):
                start = time.perf_counter()
                client.stub.Ready(services_pb2.Empty())
                rtt.append(time.perf_counter() - start)
            client.stub.Ready(services_pb2.Empty())  # Ready resets the server; the chunks follow
            observations, round_trips = [], []
            for i in range(args.chunks + 1):
                raw = client.robot.get_observation()
                raw["task"] = TASK
                observations.append(dict(raw))
                obs = TimedObservation(time.time(), 1000 * i, raw, must_go=True)
                start = time.perf_counter()
                client.send_observation(obs)
                while not client.stub.GetActions(services_pb2.Empty()).data:
                    pass
                if i:  # the first chunk also pays the server's first-call costs
                    round_trips.append(time.perf_counter() - start)
                time.sleep(1 / args.fps)
            features = client.policy_config.lerobot_features
            client.stop()
        except grpc.RpcError as e:
            raise RuntimeError(f"gRPC failed: {e}; {server_log}") from e
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        # In process with the simulator still running, as lerobot-rollout runs beside it.
        steps = args.n_action_steps
        in_process = in_process_chunks(args.checkpoint, observations[1:], features, steps)[1:]
    # The server logs "Preprocessing and inference took <s>s" for every chunk (its `_predict_action_chunk`).
    served = re.findall(r"Preprocessing and inference took ([0-9.]+)s", server_log.read_text())
    served = [float(x) for x in served]
    budget_s = args.threshold * args.actions_per_chunk / args.fps
    delay = math.ceil(statistics.median(in_process) * args.fps)
    return {
        "checkpoint": str(args.checkpoint),
        "fps": args.fps,
        "image_size": args.image_size,
        "threads": torch.get_num_threads(),
        "chunks": args.chunks,
        "async": {
            "policy_load_on_connect_s": round(load_s, 2),
            "grpc_round_trip": _ms(rtt),
            "observation_to_chunk": _ms(round_trips),
            "server_inference": _ms(served[1:]) if len(served) > 1 else None,
            "actions_per_chunk": args.actions_per_chunk,
            "chunk_size_threshold": args.threshold,
            "budget_ms": round(1000 * budget_s, 1),
        },
        "rtc_in_process": {
            "chunk": _ms(in_process),
            "inference_delay_steps": delay,
            "n_action_steps": steps,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a G1 `pretrained_model` folder")
    parser.add_argument("--image-size", type=int, default=96, help="the head camera's size the policy saw")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--actions-per-chunk", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5, help="the client's chunk_size_threshold")
    parser.add_argument("--n-action-steps", type=int, default=2, help="RTC execution horizon")
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = measure(args)
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
