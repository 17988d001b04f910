"""Real server processes for tests: free ports, and a server started in its own process group, waited on
until `GET /health` answers 200, and stopped with its whole group (vLLM and the launch script fork workers).

Importable from any test module as `server_process`: pytest puts tests/ (where conftest.py lives) on sys.path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import httpx
import pytest


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def running_server(cmd: Sequence[str], url: str, log_path: Path, timeout_s: float, *,
                   env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Run `cmd` (stdout and stderr to log_path) until `url + "/health"` answers 200, yield the process, and
    stop its process group on exit (SIGTERM, then SIGKILL). Fails the test, with the log's tail, when the
    server exits or is not healthy within timeout_s."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after {timeout_s:.0f}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
