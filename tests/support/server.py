"""A gateway in a uvicorn subprocess on loopback, for tests that need a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.calibrate import scaled

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`start()` runs uvicorn (again, on the same port and database after a `kill()`)."""

    def __init__(self, database_url: str, data_dir: Path, port: int | None = None, *, host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = (), serve: tuple[str, ...] | None = None, **env: str) -> None:
        """`host`: the address to listen on; `prefix`: a command that runs uvicorn (e.g. `ip netns exec NS`
        to run the gateway inside a network namespace, tests/support/netns.py); `serve`: run it through
        `gpuproof gateway serve` with these extra arguments instead of uvicorn's own command line."""
        self.port = port or free_port()
        self.host, self.prefix = host, list(prefix)
        self.env = {**os.environ, "GPUPROOF_DATABASE_URL": database_url, "GPUPROOF_DATA_DIR": str(data_dir),
                    "GPUPROOF_VERIFY_TEST_SHAPE": "16,256,64,3", **env}
        self.base = f"http://{host}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.serve = serve

    def start(self) -> Server:
        """Start uvicorn and wait for /readyz (30 s on the reference machine, scaled to this one). Its
        stderr goes to a file (a pipe nobody reads would fill up and block the gateway mid-test); the
        file's tail is in the error when it does not come up."""
        self.log_path = Path(self.env["GPUPROOF_DATA_DIR"]).with_name(f"uvicorn-{self.port}.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            command = ([sys.executable, "-m", "uvicorn", "gpuproof.gateway.asgi:app", "--log-level", "warning"]
                       if self.serve is None else [sys.executable, "-m", "gpuproof", "gateway", "serve", *self.serve])
            self.proc = subprocess.Popen([*self.prefix, *command, "--host", self.host, "--port", str(self.port)],
                                         env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        limit_s = scaled(30)
        deadline = time.monotonic() + limit_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                answer = httpx.get(f"{self.base}/readyz", timeout=scaled(1))
                if answer.status_code == 200:
                    return self
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become ready in {limit_s:.0f} s; last /readyz: {last}; "
                           f"log: {self.log_tail()}")

    @property
    def audience(self) -> str:
        """What request signatures to this gateway name (GET /v1/identity)."""
        return httpx.get(f"{self.base}/v1/identity", timeout=scaled(10)).json()["audience"]

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the gateway was not started")
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=scaled(10))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.kill()
