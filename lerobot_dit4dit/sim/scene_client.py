"""Client of the simulator's scene channel (REP :6002): button position, task metrics, reset."""

from __future__ import annotations

import json

SCENE_PORT = 6002


class SceneClient:
    """`scene()` -> {"button", "presses", "press_times", "time", "commands", ...}; `reset(seed)` likewise.

    Every request has a timeout: a REQ socket that timed out is replaced, so a dead simulator raises
    TimeoutError instead of blocking."""

    def __init__(self, host: str = "127.0.0.1", port: int = SCENE_PORT, timeout_s: float = 2.0):
        import zmq

        self._zmq = zmq
        self.address = f"tcp://{host}:{port}"
        self.timeout_ms = int(timeout_s * 1000)
        self._ctx = zmq.Context()
        self._sock = None

    def _socket(self):
        if self._sock is None:
            zmq = self._zmq
            self._sock = self._ctx.socket(zmq.REQ)
            for opt, value in (
                (zmq.LINGER, 0),
                (zmq.RCVTIMEO, self.timeout_ms),
                (zmq.SNDTIMEO, self.timeout_ms),
            ):
                self._sock.setsockopt(opt, value)
            self._sock.connect(self.address)
        return self._sock

    def request(self, cmd: str, **kwargs) -> dict:
        sock = self._socket()
        try:
            sock.send_string(json.dumps({"cmd": cmd, **kwargs}))
            reply = json.loads(sock.recv_string())
        except self._zmq.Again as e:
            sock.close(linger=0)
            self._sock = None
            raise TimeoutError(f"no reply from the G1 simulator's scene channel at {self.address}") from e
        if "error" in reply:
            raise ValueError(f"G1 simulator: {reply['error']}")
        return reply

    def scene(self) -> dict:
        return self.request("scene")

    def reset(self, seed: int | None = None) -> dict:
        return self.request("reset", seed=seed)

    def close(self) -> None:
        self._sock = None
        self._ctx.destroy(linger=0)  # closes the socket too; term() alone would wait for it forever

    def __enter__(self) -> SceneClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
