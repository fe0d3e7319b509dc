"""The review page in a real browser: Debian's chromium driven by Selenium.

Starts the real server (``python -m falv serve``) on a loopback port with a tiny
random model, submits a small generated video, and then, in headless chromium:
the page loads, the job finishes in the job list, its timeline renders segment
blocks and the score strip, a segment is relabelled, an edge dragged and a
segment rejected, a video label ticked, the corrections are saved (Ctrl+S),
after a reload they are read back from the page and from
``GET /v1/jobs/{id}/corrections``, and Export shows the training source.

The browser and driver come from apt (``chromium``, ``chromium-driver``;
``.ci/run`` installs them); nothing is downloaded at run time. Without them the
test is skipped. Run it alone with ``make test-browser``. A screenshot of the
page is kept in the test's tmp dir (its path is printed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)

LABELS = {0: "a", 1: "b", 2: "c"}
SERVER_START_S = 90
JOB_DONE_S = 120
UI_WAIT_S = 30


# ---------------------------------------------------------------- HTTP helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _json(method: str, url: str, payload=None):
    body = None if payload is None else json.dumps(payload).encode()
    headers = {} if payload is None else {"Content-Type": "application/json"}
    status, data = _request(method, url, body, headers)
    return status, (json.loads(data) if data else None)


def _multipart(fields: dict[str, str], file_field: str, path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{path.name}"\r\n'
        f"Content-Type: video/mp4\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(serve_model, tmp_path_factory):
    """The real falv server on a free loopback port, with the tiny seeded 3-class model
    of conftest.py (``FALForVideoClassification(preset("tiny", id2label={0: "a", ...}))``)."""
    root = tmp_path_factory.mktemp("review-page")
    model_dir = serve_model
    data_dir = root / "data"
    port = _free_port()
    log = (root / "server.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "falv", "serve", "--model", str(model_dir), "--port", str(port),
         "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"falv serve exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                status, body = _json("GET", f"{base}/health")
                if status == 200 and body.get("status") == "UP":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"falv serve did not answer /health in {SERVER_START_S} s:\n"
                            f"{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"base": base, "root": root, "log": root / "server.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1280,800", "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--mute-audio", "--no-proxy-server",
        "--autoplay-policy=no-user-gesture-required",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs, nothing is downloaded.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(server["root"] / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_window_size(1280, 800)
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------- the test


def _segments_in_dom(driver):
    return driver.execute_script(
        """return Array.from(document.querySelectorAll('#tl-lanes .seg')).map(n => ({
             label: n.dataset.label, start: Number(n.dataset.start), end: Number(n.dataset.end),
             accepted: n.classList.contains('accepted')}))
           .sort((x, y) => x.start - y.start || x.end - y.end || (x.label < y.label ? -1 : 1));"""
    )


def _key(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _seg_node(driver, index):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#tl-lanes .seg[data-index="{index}"]')


def test_review_page_end_to_end(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from falv.video.testing import write_test_video

    base = server["base"]
    driver = browser
    wait = WebDriverWait(driver, UI_WAIT_S)
    shot = tmp_path / "review_page.png"
    try:
        # The page loads (no job yet needed) and asks the server for the labels.
        driver.get(f"{base}/")
        wait.until(EC.presence_of_element_located((By.ID, "dropzone")))
        assert "falv" in driver.title

        # Submit a small video through the API; the page's job list picks it up
        # and shows it finishing.
        video = write_test_video(tmp_path / "clip.mp4", frames=48, fps=12, size=(64, 80))
        body, ctype = _multipart({"window": "1.0", "stride": "1.0", "threshold": "0"}, "file", video)
        status, data = _request("POST", f"{base}/v1/jobs", body, {"Content-Type": ctype})
        assert status == 202, data
        job_id = json.loads(data)["id"]
        item = f'#job-list li[data-job-id="{job_id}"]'
        WebDriverWait(driver, JOB_DONE_S).until(
            EC.presence_of_element_located((By.CSS_SELECTOR, f'{item}[data-status="done"]')))
        assert "clip.mp4" in driver.find_element(By.CSS_SELECTOR, item).text

        status, job = _json("GET", f"{base}/v1/jobs/{job_id}")
        assert status == 200 and job["status"] == "done", job
        record = job["record"]
        assert record and record["error"] is None, record

        # Open it: the timeline has one block per model segment and the score strip
        # one bar per window, actually drawn.
        driver.find_element(By.CSS_SELECTOR, f"{item} a").click()
        wait.until(lambda d: d.execute_script("return document.querySelectorAll('#tl-lanes .seg').length")
                   == len(record["segments"]))
        assert len(record["segments"]) >= 1
        strip = driver.find_element(By.ID, "score-strip")
        assert int(strip.get_attribute("data-windows")) == len(record["windows"]) > 0
        painted = driver.execute_script(
            """const c = document.getElementById('score-strip');
               const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i]) n++; return n;""")
        assert painted > 0, "the score strip is blank"
        assert driver.find_element(By.ID, "video").get_attribute("src").endswith(f"/v1/jobs/{job_id}/video")
        assert driver.find_element(By.ID, "save-status").text == "Model output, not reviewed yet"

        # Make sure there are at least two segments: split the first at its middle
        # (clicking a block selects it and seeks to the click).
        if len(record["segments"]) < 2:
            _seg_node(driver, 0).click()
            _key(driver, "s")
            wait.until(lambda d: len(_segments_in_dom(d)) == 2)

        # Relabel the first segment with the dropdown.
        _seg_node(driver, 0).click()
        old_label = _segments_in_dom(driver)[0]["label"]
        new_label = next(lab for lab in LABELS.values() if lab != old_label)
        Select(driver.find_element(By.ID, "seg-label")).select_by_value(new_label)
        wait.until(lambda d: _segments_in_dom(d)[0]["label"] == new_label)

        # Drag the end edge of the first segment to the left.
        first = _segments_in_dom(driver)[0]
        node = driver.find_element(By.CSS_SELECTOR, '#tl-lanes .seg[data-index="0"]')
        width = node.size["width"]
        edge = node.find_element(By.CSS_SELECTOR, ".edge-end")
        ActionChains(driver).click_and_hold(edge).move_by_offset(-int(width * 0.4), 0).release().perform()
        moved = _segments_in_dom(driver)[0]
        assert moved["start"] == pytest.approx(first["start"])
        assert first["start"] < moved["end"] < first["end"] - 0.05, (first, moved)

        # Reject the last segment with the keyboard.
        count = len(_segments_in_dom(driver))
        _seg_node(driver, count - 1).click()
        _key(driver, "r")
        wait.until(lambda d: len(_segments_in_dom(d)) == count - 1)

        # Tick one more video-level label.
        boxes = driver.find_elements(By.CSS_SELECTOR, "#video-labels input[type=checkbox]")
        assert [b.get_attribute("value") for b in boxes] == list(LABELS.values())
        before = [b.get_attribute("value") for b in boxes if b.is_selected()]
        next(b for b in boxes if not b.is_selected()).click()  # add one: the set stays non-empty
        want_labels = [b.get_attribute("value") for b in
                       driver.find_elements(By.CSS_SELECTOR, "#video-labels input[type=checkbox]") if b.is_selected()]
        assert want_labels != before

        want = _segments_in_dom(driver)
        assert driver.find_element(By.ID, "save-status").text == "Unsaved changes"

        # Save with Ctrl+S.
        driver.find_element(By.ID, "tl-area").click()  # focus away from the checkbox
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
        wait.until(lambda d: d.find_element(By.ID, "save-status").text.startswith("Saved"))

        # Read back through the API.
        status, doc = _json("GET", f"{base}/v1/jobs/{job_id}/corrections")
        assert status == 200, doc
        assert doc["saved"]
        assert doc["labels"] == want_labels
        got = sorted(doc["segments"], key=lambda s: (s["start"], s["end"], s["label"]))
        assert [s["label"] for s in got] == [s["label"] for s in want]
        for g, w in zip(got, want):
            assert g["start"] == pytest.approx(w["start"], abs=2e-3)
            assert g["end"] == pytest.approx(w["end"], abs=2e-3)
        assert got[0]["label"] == new_label and got[0]["end"] == pytest.approx(moved["end"], abs=2e-3)

        # Reload: the page reopens the job (the URL keeps it) and shows the saved corrections.
        driver.refresh()
        wait.until(lambda d: d.execute_script("return document.querySelectorAll('#tl-lanes .seg').length")
                   == len(want))
        again = _segments_in_dom(driver)
        assert [s["label"] for s in again] == [s["label"] for s in want]
        for g, w in zip(again, want):
            assert g["start"] == pytest.approx(w["start"], abs=2e-3)
            assert g["end"] == pytest.approx(w["end"], abs=2e-3)
            assert g["accepted"]
        checked = [b.get_attribute("value") for b in
                   driver.find_elements(By.CSS_SELECTOR, "#video-labels input[type=checkbox]") if b.is_selected()]
        assert checked == want_labels
        assert driver.find_element(By.ID, "save-status").text.startswith("Saved")

        # Zoom in with "+" (the blocks get wider), back to the whole video with "0".
        def widths(d):
            return d.execute_script(
                "return Array.from(document.querySelectorAll('#tl-lanes .seg')).map(n => n.getBoundingClientRect().width)")

        before_zoom = widths(driver)
        _key(driver, "+")
        assert driver.find_element(By.ID, "zoom-level").text == "2.0×"
        assert max(widths(driver)) > 1.5 * max(before_zoom)
        _key(driver, "0")
        assert driver.find_element(By.ID, "zoom-level").text == ""
        assert widths(driver) == pytest.approx(before_zoom, abs=1)

        # Export: the page shows where the training source was written.
        driver.find_element(By.ID, "export-button").click()
        wait.until(lambda d: d.find_element(By.ID, "export-dialog").is_displayed())
        text = driver.find_element(By.ID, "export-body").text
        assert "1 corrected video" in text and "train.csv" in text, text
        csv_path = Path(driver.find_element(By.CSS_SELECTOR, "#export-body dd code").text)
        rows = csv_path.read_text().splitlines()
        assert rows[1].split(",")[1:] == want_labels, rows
        driver.save_screenshot(str(tmp_path / "review_page_export.png"))
        _key(driver, Keys.ESCAPE)
        wait.until(lambda d: not d.find_element(By.ID, "export-dialog").is_displayed())

        # The help overlay opens with "?" and closes with Escape.
        _seg_node(driver, 0).click()
        _key(driver, "?")
        assert driver.find_element(By.ID, "help-dialog").is_displayed()
        _key(driver, Keys.ESCAPE)
        wait.until(lambda d: not d.find_element(By.ID, "help-dialog").is_displayed())

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "Uncaught" in e["message"]]
        assert not errors, errors
    finally:
        driver.save_screenshot(str(shot))
        print(f"\nreview page screenshot: {shot}")
