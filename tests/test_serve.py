"""`python -m lerobot_dit4dit.serve`: LeRobot's async-inference policy server with dit4dit accepted, in its
own process only. The end-to-end run (bridge -> server -> LeRobot's robot client) is `test_g1.py`'s
`test_g1_async_inference`."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import pickle
from lerobot.async_inference import constants, policy_server
from lerobot.async_inference.configs import PolicyServerConfig
from lerobot.async_inference.helpers import RemotePolicyConfig
import lerobot_dit4dit
shipped = list(constants.SUPPORTED_POLICIES)
assert "dit4dit" not in policy_server.SUPPORTED_POLICIES, "importing the plugin changed LeRobot's server"
from lerobot_dit4dit.serve import accept_dit4dit
accepted = accept_dit4dit()
assert policy_server.SUPPORTED_POLICIES == accepted == shipped + ["dit4dit"], accepted
assert constants.SUPPORTED_POLICIES == shipped, "LeRobot's own list was changed"

class Context:
    def peer(self):
        return "test"

server = policy_server.PolicyServer(PolicyServerConfig())
for policy_type in ("not_a_policy", "dit4dit"):
    spec = RemotePolicyConfig(policy_type, "/nonexistent/checkpoint", {}, 8, "cpu")
    request = type("Request", (), {"data": pickle.dumps(spec)})()
    try:
        server.SendPolicyInstructions(request, Context())
    except Exception as e:
        print(policy_type, type(e).__name__, str(e).splitlines()[0])
"""


def test_serve_accepts_dit4dit_in_its_own_process_only():
    """Importing the plugin leaves LeRobot's server as shipped; `accept_dit4dit` rebinds the server's list
    only. An unknown type is still refused with LeRobot's message, and dit4dit gets past the type check to
    the checkpoint (which does not exist here, so the load fails naming it)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["not_a_policy"].startswith("ValueError Policy type not_a_policy not supported"), lines
    assert not lines["dit4dit"].startswith("ValueError Policy type"), lines
    assert "/nonexistent/checkpoint" in lines["dit4dit"], lines
