"""Test helper: a real `prefect server start` on a free loopback port, and clean process teardown.

For tests that need what the in-process test harness cannot give: the CLI (`prefect deploy`),
workers in other processes, the UI. Every process is started in its own process group, stopped
with SIGINT first (a worker on SIGTERM outlives the server and keeps retrying), then SIGKILL of
the whole group after a timeout; each writes to a log file whose tail goes into failure messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# This interpreter's bin folder: the `prefect` CLI of the same environment, and what setup.sh finds.
BIN_DIR = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, chars: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"--- {path.name} (last {chars} chars) ---\n{text[-chars:]}"


def start_process(command: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed with the process below
    try:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()  # the child has its own copy of the descriptor


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT, then SIGKILL of the process group after `timeout` s; also ends leftover children."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group we created: the process and its children
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@dataclass
class PrefectServer:
    url: str  # the UI
    api_url: str
    env: dict[str, str]  # for subprocesses: PREFECT_HOME, PREFECT_API_URL, PATH with this env's bin
    log_path: Path
    process: subprocess.Popen

    def prefect(self, *args: str) -> list[str]:
        return [str(BIN_DIR / "prefect"), *args]


def wait_healthy(api_url: str, process: subprocess.Popen, log_path: Path, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s\n{log_tail(log_path)}")


@contextmanager
def prefect_server(workdir: Path, timeout: float = 120.0) -> Iterator[PrefectServer]:
    """A fresh server (its own PREFECT_HOME and database under `workdir`), healthy, then stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url, api_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_API_URL": api_url,
        # The UI asks the server where its API is; the default says port 4200 whatever --port is.
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_path = workdir / "server.log"
    process = start_process([str(BIN_DIR / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env, log_path)
    try:
        wait_healthy(api_url, process, log_path, timeout)
        yield PrefectServer(url=url, api_url=api_url, env=env, log_path=log_path, process=process)
    finally:
        stop_process(process)
