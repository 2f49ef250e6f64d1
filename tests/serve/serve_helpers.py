"""A real ``vislang serve`` process on loopback for the tests (imported by the test modules of this folder)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(args: list[str], timeout: float = 90.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``vislang serve ARGS --host 127.0.0.1 --port P`` process; yields its base URL once ``/readyz``
    answers 200, and stops it after (terminate, then kill). Fails with its stderr if it dies first."""
    import httpx

    port = free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vislang-serve-{port}.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "vislang", "serve", *args, "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"vislang serve exited with {proc.returncode}:\n{log.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"vislang serve not ready after {timeout:.0f} s:\n{log.read()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
