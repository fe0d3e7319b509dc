"""One tiny model, a few small videos, one in-process server per module, and a real
`falv serve` process per session for the tests that need one (kill, flood)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from falv import FALForVideoClassification, preset
from falv.video.testing import write_test_video

LABELS = {0: "a", 1: "b", 2: "c"}


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve-model")
    torch.manual_seed(0)
    FALForVideoClassification(preset("tiny", id2label=LABELS)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Path:
    """Videos the servers may read (their --allow-root)."""
    root = tmp_path_factory.mktemp("media")
    for i in range(4):
        write_test_video(root / f"clip{i}.mp4", frames=36, fps=12, size=(64, 80), gop=6)
    write_test_video(root / "clip.webm", frames=24, fps=12, size=(64, 64), codec="libvpx-vp9")
    data = (root / "clip0.mp4").read_bytes()
    (root / "broken.mp4").write_bytes(data[: len(data) // 3])
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"falv serve exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("falv serve did not answer /health in time")


class ServerProcess:
    """`falv serve` in a subprocess (stopped by its process id)."""

    def __init__(self, model: Path, data_dir: Path, allow_root: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "falv", "serve", "--model", str(model), "--port", str(self.port),
                     "--data-dir", str(data_dir), "--allow-root", str(allow_root), "--workers", "1", *extra]
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        wait_healthy(self.url, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its decoding workers
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def live_server(serve_model, media, tmp_path_factory):
    server = ServerProcess(serve_model, tmp_path_factory.mktemp("live-data"), media).start()
    yield server
    server.stop()
