"""Start llmpulse workers as real processes for integration tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


class WorkerProcess:
    """One ``llmpulse run NAME`` process with its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, metrics_port: int = -1) -> None:
        self.name = name
        self.metrics_port = metrics_port
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processors.cli", "run", self.name, "--metrics-port", str(self.metrics_port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye, like a crashed machine."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def worker_env(bootstrap: str, database_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "LLMPULSE_STATE_DIR": str(state_dir),
        **extra,
    }


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, workers: list[WorkerProcess], interval_s: float = 0.5
) -> None:
    """Poll ``condition`` until true; fail with the workers' logs if it never is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        for worker in workers:
            assert worker.alive(), f"{worker.name} died:\n{worker.log()}"
        time.sleep(interval_s)
    logs = "\n".join(f"--- {w.name}\n{w.log()}" for w in workers)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{logs}")
