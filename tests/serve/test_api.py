"""The HTTP API of `falv serve`, in process (FastAPI's TestClient), one server for the module."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import urllib.parse
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from falv.errors import ConfigError
from falv.serve.app import create_app, sniff_upload
from falv.serve.service import LabelService, ServeSettings, confine, job_options

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client(serve_model, media, tmp_path_factory):
    settings = ServeSettings(model=str(serve_model), data_dir=tmp_path_factory.mktemp("data"),
                             allow_roots=(media,), workers=1, max_upload_mb=1)
    with TestClient(create_app(LabelService(settings))) as c:
        yield c


def wait_done(client: TestClient, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "UP" and body["labels"] == 3 and body["model_class"]


def test_a_job_record_equals_what_falv_label_writes(client, serve_model, media, tmp_path):
    from falv.cli.main import main

    options = {"window": 1.0, "stride": 0.5, "top_k": 2}
    r = client.post("/v1/jobs", json={"path": str(media / "clip1.mp4"), **options})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "done" and job["progress"] == 1.0
    with pytest.raises(SystemExit):
        main(["label", str(media / "clip1.mp4"), "-m", str(serve_model), "-o", str(tmp_path), "--window", "1",
              "--stride", "0.5", "--top-k", "2", "--workers", "1", "-q"])
    [line] = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert job["record"] == json.loads(line)


def test_upload_then_video_with_ranges(client, media):
    data = (media / "clip.webm").read_bytes()
    r = client.post("/v1/jobs", files={"file": ("my clip.webm", data, "video/webm")}, data={"clips": "2"})
    assert r.status_code == 202
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "done" and job["name"] == "my clip.webm" and len(job["record"]["windows"]) == 2
    part = client.get(f"/v1/jobs/{job['id']}/video", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == data[:100]


def test_a_broken_video_is_a_failed_job_with_the_typed_record(client, media):
    r = client.post("/v1/jobs", files={"file": ("broken.mp4", (media / "broken.mp4").read_bytes(), "video/mp4")})
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "failed" and job["record"]["error"]["type"] == "corrupt"


@pytest.mark.parametrize("kwargs, status, kind", [
    (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "bad_json"),
    (dict(json=[1, 2]), 400, "bad_json"),
    (dict(json={}), 422, "invalid_request"),
    (dict(json={"path": "/etc/passwd"}), 403, "forbidden"),
    (dict(json={"path": "MEDIA/../../etc/passwd"}), 403, "forbidden"),
    (dict(json={"path": "MEDIA/missing.mp4"}), 404, "not_found"),
    (dict(json={"path": "MEDIA/clip0.mp4", "colour": 1}), 422, "invalid_options"),
    (dict(json={"path": "MEDIA/clip0.mp4", "clips": "many"}), 422, "invalid_options"),
    (dict(json={"path": "MEDIA/clip0.mp4", "clips": 1.5}), 422, "invalid_options"),
    (dict(json={"path": "MEDIA/clip0.mp4", "window": 1, "stride": 2}), 422, "invalid_options"),
    (dict(content=b'{"path": "x", "window": Infinity}', headers={"content-type": "application/json"}), 400,
     "bad_json"),
    (dict(content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
    (dict(files={"file": ("a.mp4", b"just some text, not a video\n" * 20, "video/mp4")}), 415, "not_a_video"),
    (dict(files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")}), 415, "not_a_video"),
    (dict(files={"file": ("a.mp4", b"", "video/mp4")}), 415, "not_a_video"),
    (dict(files={"other": ("a.mp4", b"\x00\x00\x00\x18ftyp", "video/mp4")}), 422, "invalid_request"),
    (dict(files={"file": ("big.mp4", b"\x00\x00\x00\x18ftypisom" + bytes(2 * 1024 * 1024), "video/mp4")}),
     413, "too_large"),
    (dict(content=b"--xyz\r\nnot a form", headers={"content-type": "multipart/form-data; boundary=xyz"}), 400, None),
])
def test_bad_requests_get_a_4xx_json_error(client, media, kwargs, status, kind):
    if "json" in kwargs and isinstance(kwargs["json"], dict) and isinstance(kwargs["json"].get("path"), str):
        kwargs = dict(kwargs, json=dict(kwargs["json"], path=kwargs["json"]["path"].replace("MEDIA", str(media))))
    r = client.post("/v1/jobs", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if kind:
        assert body["error"]["type"] == kind


def test_unknown_ids_and_methods(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/jobs/nope/video").status_code == 404
    assert client.delete("/v1/jobs/nope").status_code == 404
    assert client.put("/v1/jobs").status_code == 405
    assert client.get("/v1/jobs?limit=0").status_code == 422


def test_events_stream_until_the_job_ends(client, media):
    job_id = client.post("/v1/jobs", json={"path": str(media / "clip2.mp4")}).json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        text = "".join(response.iter_text())
    statuses = [json.loads(line[6:])["status"] for line in text.splitlines() if line.startswith("data: ")]
    assert statuses[-1] == "done" and "event: status" in text


def test_list_and_export_every_format(client, media):
    job_id = client.post("/v1/jobs", json={"path": str(media / "clip3.mp4"), "window": 1.0}).json()["id"]
    wait_done(client, job_id)
    listed = client.get("/v1/jobs?limit=5").json()["jobs"]
    assert listed[0]["id"] == job_id and "record" not in listed[0]
    r = client.get(f"/v1/export?formats=jsonl,csv,label-studio,fiftyone,activitynet,webvtt&ids={job_id}")
    assert r.status_code == 200
    names = set(zipfile.ZipFile(io.BytesIO(r.content)).namelist())
    assert {"labels.jsonl", "labels.csv", "label_studio_tasks.json", "label_studio_config.xml",
            "activitynet_results.json"} <= names and any(n.startswith("webvtt/") for n in names)
    assert client.get("/v1/export?formats=pdf").status_code == 422
    # a file labelled again: the export holds one record per input, the newest job's (as labels.jsonl)
    again = client.post("/v1/jobs", json={"path": str(media / "clip3.mp4"), "window": 0.5}).json()["id"]
    wait_done(client, again)
    r = client.get(f"/v1/export?formats=jsonl&ids={job_id},{again}")
    lines = zipfile.ZipFile(io.BytesIO(r.content)).read("labels.jsonl").decode().splitlines()
    [record] = [json.loads(line) for line in lines]
    newest = client.get(f"/v1/jobs/{again}").json()["record"]
    assert record["windows"] == newest["windows"] and record["precision"] and record["device"]


def test_corrections_round_trip_into_a_training_source(client, media):
    from falv.data.sources import load_source

    job_id = client.post("/v1/jobs", json={"path": str(media / "clip0.mp4"), "window": 1.0}).json()["id"]
    job = wait_done(client, job_id)
    default = client.get(f"/v1/jobs/{job_id}/corrections").json()
    assert default["saved"] is None and default["labels"] == [job["record"]["labels"][0]["label"]]
    edit = {"labels": ["b"], "segments": [{"label": "a", "start": 0.0, "end": 1.25}, {"label": "c", "start": 2, "end": 3}]}
    saved = client.put(f"/v1/jobs/{job_id}/corrections", json=edit).json()
    assert saved["saved"] and saved["labels"] == ["b"] and saved["segments"][0] == {"label": "a", "start": 0.0,
                                                                                      "end": 1.25}
    assert client.get(f"/v1/jobs/{job_id}/corrections").json() == saved
    for bad in ({"labels": ["zebra"]}, {"segments": [{"label": "a", "start": 2, "end": 1}]},
                {"segments": [{"label": "a", "start": 0, "end": 99}]}, {"labels": "b"}):
        r = client.put(f"/v1/jobs/{job_id}/corrections", json=bad)
        assert r.status_code == 422 and r.json()["error"]["type"] in ("unknown_label", "invalid_corrections")
    summary = client.get("/v1/corrections/export").json()
    source = load_source(summary["csv"])
    entry = next(e for e in source.entries if Path(e.path) == media / "clip0.mp4")
    assert entry.labels == ("b",) and source.classes == ["a", "b", "c"]
    segments = json.loads(Path(summary["segments"]).read_text())["database"]["clip0"]["annotations"]
    assert segments[0] == {"segment": [0.0, 1.25], "label": "a"}


def test_a_job_that_is_not_done_cannot_be_corrected(serve_model, media, tmp_path):
    settings = ServeSettings(model=str(serve_model), data_dir=tmp_path, allow_roots=(media,), max_queue=1)
    app = create_app(LabelService(settings), manage=False)  # no engine: jobs stay queued
    with TestClient(app) as c:
        job_id = c.post("/v1/jobs", json={"path": str(media / "clip0.mp4")}).json()["id"]
        assert c.put(f"/v1/jobs/{job_id}/corrections", json={"labels": ["a"]}).status_code == 409
        full = c.post("/v1/jobs", json={"path": str(media / "clip1.mp4")})  # max_queue=1
        assert full.status_code == 429 and full.headers["retry-after"]
        cancelled = c.delete(f"/v1/jobs/{job_id}").json()
        assert cancelled["status"] == "cancelled"
        assert c.post("/v1/jobs", json={"path": str(media / "clip1.mp4")}).status_code == 202


def test_token_auth(serve_model, media, tmp_path):
    settings = ServeSettings(model=str(serve_model), data_dir=tmp_path, allow_roots=(media,), token="s3cret")
    with TestClient(create_app(LabelService(settings), manage=False)) as c:
        assert c.get("/health").status_code == 200  # Label Studio and load balancers probe it
        denied = c.get("/v1/jobs")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/v1/jobs", json={"path": str(media / "clip0.mp4")}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202
        job_id = ok.json()["id"]
        assert c.get(f"/v1/jobs/{job_id}/video").status_code == 401
        assert c.get(f"/v1/jobs/{job_id}/video?token=s3cret").status_code == 200


def test_settings_refuse_an_open_port_without_a_token(serve_model, tmp_path):
    with pytest.raises(ConfigError, match="without --token"):
        ServeSettings(model=str(serve_model), host="0.0.0.0", data_dir=tmp_path)
    ServeSettings(model=str(serve_model), host="0.0.0.0", data_dir=tmp_path, token="t")
    ServeSettings(model=str(serve_model), host="::1", data_dir=tmp_path)


def test_confinement_resolves_links_and_dots(media, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    link = media / "link-out.mp4"
    link.symlink_to(outside)
    try:
        assert confine(str(media / "sub" / ".." / "clip0.mp4"), (media,)) == media / "clip0.mp4"
        for bad in (str(link), str(outside), "", "rel/../../x"):
            with pytest.raises(Exception, match="outside|usable"):
                confine(bad, (media,))
    finally:
        link.unlink()


@pytest.mark.parametrize("raw, expected", [
    ({"clips": 3}, {"clips": 3}), ({"clips": "2"}, {"clips": 2}), ({"window": "1.5", "stride": 0.5},
                                                                    {"window": 1.5, "stride": 0.5}),
    ({"threshold": 0.3, "top_k": None}, {"threshold": 0.3}),
])
def test_job_options_table(raw, expected):
    assert job_options(raw) == expected


@pytest.mark.parametrize("head, ok", [(b"\x00\x00\x00\x18ftypisom", True), (b"\x1a\x45\xdf\xa3", True),
                                      (b"GIF89a", False), (b"hello\n", False), (b"", False), (b"\x47" + bytes(187), True)])
def test_sniff_table(head, ok):
    assert (sniff_upload(head) is None) == ok


# -- Label Studio's ML backend ------------------------------------------------------------------------

CONFIG = """<View>
  <Video name="clip" value="$movie" frameRate="25"/>
  <TimelineLabels name="acts" toName="clip"><Label value="a"/><Label value="b"/><Label value="c"/></TimelineLabels>
  <Choices name="kind" toName="clip"><Choice value="a"/><Choice value="b"/><Choice value="c"/></Choices>
</View>"""


def test_setup_and_predict_answer_in_the_projects_names(client, media):
    started = time.monotonic()
    setup = client.post("/setup", json={"project": "7.1700000000", "schema": CONFIG, "hostname": "http://127.0.0.1:9",
                                        "access_token": "tok"})
    assert setup.status_code == 200 and setup.json()["model_version"] and time.monotonic() - started < 3
    tasks = [{"id": 1, "data": {"movie": str(media / "clip0.mp4")}}, {"id": 2, "data": {"movie": "/etc/passwd"}}]
    r = client.post("/predict", json={"tasks": tasks, "project": "7.1700000000"})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 2 and results[1]["result"] == []  # a path outside --allow-root is refused
    first = results[0]
    assert first["model_version"] == setup.json()["model_version"] and 0 <= first["score"] <= 1
    kinds = {item["type"] for item in first["result"]}
    assert kinds == {"choices", "timelinelabels"}
    for item in first["result"]:
        assert item["to_name"] == "clip" and item["from_name"] in ("acts", "kind")
        if item["type"] == "timelinelabels":
            [span] = item["value"]["ranges"]
            assert 1 <= span["start"] <= span["end"] <= 75  # 3 s at the config's 25 fps, 1-based frames


def test_predict_fetches_label_studio_urls_from_its_host_only(client, media, tmp_path):
    data = (media / "clip1.mp4").read_bytes()
    seen = []

    class FakeLabelStudioFiles(http.server.BaseHTTPRequestHandler):  # Label Studio's file serving, nothing else
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if self.headers.get("Authorization") != "Token tok2" or query.get("d") != ["videos/clip1.mp4"]:
                self.send_error(403)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudioFiles)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{httpd.server_address[1]}"
        client.post("/setup", json={"project": "8", "schema": CONFIG, "hostname": host, "access_token": "tok2"})
        tasks = [{"id": 1, "data": {"movie": "/data/local-files/?d=videos/clip1.mp4"}},
                 {"id": 2, "data": {"movie": "http://example.invalid/video.mp4"}}]
        results = client.post("/predict", json={"tasks": tasks, "project": "8"}).json()["results"]
        assert results[0]["result"] and results[1]["result"] == []
        assert seen == [("/data/local-files/?d=videos/clip1.mp4", "Token tok2")]  # example.invalid never asked
    finally:
        httpd.shutdown()


def test_predict_job_options_come_from_the_backends_extra_params(client, media):
    """Label Studio's ML backend *Extra params* reach /setup; /predict labels with them (params win)."""
    tasks = [{"id": 1, "data": {"movie": str(media / "clip1.mp4")}}]

    def regions(extra, params=None):
        client.post("/setup", json={"project": "21.5", "schema": CONFIG, "extra_params": extra})
        body = {"tasks": tasks, "project": "21.5", **({"params": params} if params else {})}
        result = client.post("/predict", json=body).json()["results"][0]["result"]
        return [r for r in result if r["type"] == "timelinelabels"]

    everything = regions({"threshold": 0.0, "window": 1.5, "stride": 1.5})
    assert everything and everything[0]["value"]["ranges"][0]["start"] == 1
    assert everything[-1]["value"]["ranges"][0]["end"] == 75  # 3 s at the config's 25 fps: all of it
    assert regions({"threshold": 1.0, "window": 1.5, "stride": 1.5}) == []
    assert regions({"threshold": 1.0, "window": 1.5, "stride": 1.5}, params={"threshold": 0.0})


@pytest.mark.parametrize("body, status", [
    ({"tasks": "x"}, 400), ({"tasks": [], "label_config": "<View><Text name='t' value='$t'/></View>"}, 422),
    ({"tasks": [], "label_config": "<View"}, 422), ({"tasks": []}, 400),
])
def test_predict_bad_requests(client, body, status):
    r = client.post("/predict", json={**body, "project": "999"})
    assert r.status_code == status and r.json()["error"]["message"]


def test_start_training_webhook_fine_tunes_and_the_next_predictions_carry_the_new_version(client, media):
    export = [
        {"id": i, "data": {"movie": str(media / f"clip{i}.mp4")},
         "annotations": [{"id": 10 + i, "was_cancelled": False, "updated_at": "2026-12-01T10:00:00Z",
                          "result": [{"type": "choices", "from_name": "kind", "to_name": "clip",
                                      "value": {"choices": ["abc"[i % 3]]}}]}]}
        for i in range(4)
    ]
    asked = []

    class FakeLabelStudioApi(http.server.BaseHTTPRequestHandler):  # the export endpoint, nothing else
        def do_GET(self):  # noqa: N802
            asked.append((self.path, self.headers.get("Authorization")))
            if not self.path.startswith("/api/projects/9/export?exportType=JSON"):
                self.send_error(404)
                return
            body = json.dumps(export).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeLabelStudioApi)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{httpd.server_address[1]}"
        first = client.post("/setup", json={"project": "9.1", "schema": CONFIG, "hostname": host,
                                            "access_token": "tok9", "extra_params": {"epochs": 1}}).json()
        assert client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 9}}).json()["status"] == \
            "ignored"
        r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 9}})
        assert r.status_code == 201 and r.json()["status"] == "training started"
        deadline = time.monotonic() + 240
        while client.get("/v1/training").json()["status"] == "training" and time.monotonic() < deadline:
            time.sleep(0.5)
        state = client.get("/v1/training").json()
        assert state["status"] == "done", state
        assert state["model_version"] != first["model_version"] and asked[0][1] == "Token tok9"
        tasks = [{"id": 1, "data": {"movie": str(media / "clip3.mp4")}}]
        result = client.post("/predict", json={"tasks": tasks, "project": "9"}).json()["results"][0]
        assert result["model_version"] == state["model_version"] and result["result"]
    finally:
        httpd.shutdown()


def test_basic_auth_guards_the_label_studio_endpoints(serve_model, media, tmp_path):
    import base64

    settings = ServeSettings(model=str(serve_model), data_dir=tmp_path, allow_roots=(media,), basic_auth="ls:pw")
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"ls:nope").decode()}
    with TestClient(create_app(LabelService(settings), manage=False)) as c:
        for path in ("/setup", "/predict", "/webhook"):
            denied = c.post(path, json={})
            assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
            assert c.post(path, json={}, headers=bad).status_code == 401
            assert c.post(path, json={}, headers={"Authorization": "Basic %%%"}).status_code == 401
        assert c.post("/setup", json={"project": "1", "schema": CONFIG}, headers=good).status_code == 200
        assert c.get("/health").status_code == 200


def test_stream_websocket_sends_windows_segments_and_the_end(client, media):
    from falv.video.testing import write_test_video

    path = write_test_video(media / "live.ts", frames=60, fps=12, size=(64, 80), container="mpegts")
    events = []
    # threshold 0: segments whatever model the module's earlier tests left being served (a webhook retrains it)
    with client.websocket_connect(f"/v1/stream?source={path}&window=1&stride=0.5&timeout=1&threshold=0") as ws:
        while True:
            event = ws.receive_json()
            events.append(event)
            if event["type"] in ("end", "error"):
                break
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "end" and kinds.count("window") >= 8 and "segment" in kinds, events[-1]
    windows = [e for e in events if e["type"] == "window"]
    assert windows[0]["start"] == 0 and windows[1]["start"] == pytest.approx(0.5)
    assert {x["label"] for w in windows for x in w["labels"]} <= {"a", "b", "c"}


@pytest.mark.parametrize("query, kind", [
    ("source=udp://127.0.0.1:9&window=1", "forbidden"), ("source=/etc/hostname&window=1", "forbidden"),
    ("source=/dev/video0&window=1", "forbidden"),
    ("source=MEDIA/clip0.mp4&window=1&stride=2", "invalid_options"), ("source=MEDIA/clip0.mp4&window=x", "invalid_options"),
])
def test_stream_websocket_refuses_sources_and_options(client, media, query, kind):
    with client.websocket_connect("/v1/stream?" + query.replace("MEDIA", str(media))) as ws:
        event = ws.receive_json()
    assert event["type"] == "error" and event["error"]["type"] == kind and event["error"]["message"]
