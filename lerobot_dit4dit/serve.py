"""LeRobot's async-inference policy server, with dit4dit accepted.

    python -m lerobot_dit4dit.serve --host=0.0.0.0 --port=8080 --fps=30

It takes the flags of `python -m lerobot.async_inference.policy_server` (its `PolicyServerConfig`) and runs
that server unchanged. On the robot's computer, LeRobot's own client connects to it:

    python -m lerobot.async_inference.robot_client --server_address=<server>:8080 \\
        --policy_type=dit4dit --pretrained_name_or_path=<checkpoint or hub repo> --policy_device=cuda \\
        --actions_per_chunk=16 --chunk_size_threshold=0.5 --fps=30 --task="press the red button" \\
        --robot.type=unitree_g1_dit4dit --robot.robot_ip=<robot> --robot.action_timeout_s=2

Why a command of its own: LeRobot 0.6.1's server serves only the types listed in
`lerobot/async_inference/constants.py:26` (`SUPPORTED_POLICIES`) and raises for any other in
`policy_server.py:130`, although it builds policies through the plugin-aware factory. This command rebinds
the server module's name `SUPPORTED_POLICIES` to that list plus `dit4dit`, in its own process only: importing
`lerobot_dit4dit` changes nothing of LeRobot's, and the other types are served as before.
"""

from __future__ import annotations

from .modeling_dit4dit import DiT4DiTPolicy


def accept_dit4dit() -> list[str]:
    """Let this process's policy server accept dit4dit; returns the server's list of accepted types.

    A new list is bound in the server module, so `lerobot.async_inference.constants.SUPPORTED_POLICIES` is
    left as LeRobot ships it."""
    from lerobot.async_inference import constants, policy_server

    policy_type = DiT4DiTPolicy.name  # the type name LeRobot registers the policy under
    accepted = list(constants.SUPPORTED_POLICIES)
    if policy_type not in accepted:
        accepted.append(policy_type)
    policy_server.SUPPORTED_POLICIES = accepted
    return accepted


def main() -> None:
    import logging

    from lerobot.async_inference import policy_server

    import lerobot_dit4dit  # noqa: F401  (registers the policy and its processors)

    logging.basicConfig(level=logging.INFO)
    accept_dit4dit()
    policy_server.serve()  # draccus parses sys.argv as LeRobot's own command does


if __name__ == "__main__":
    main()
