"""Label Studio's ML-backend protocol, on top of the labeling service.

Label Studio calls a model backend with ``GET /health``, ``POST /setup`` (the project's
labeling config, its host and an access token; it waits 3 s, so nothing heavy happens
there), ``POST /predict`` (tasks -> one prediction each) and ``POST /webhook`` (events
such as ``START_TRAINING``); see HumanSignal/label-studio-ml-backend,
``label_studio_ml/api.py``. This module holds what is protocol-specific: reading the
project's config (which ``<Video>``, ``<TimelineLabels>`` and ``<Choices>`` to answer
with, and at which ``frameRate``), finding a task's video (a path under ``--allow-root``,
or Label Studio's own ``/data/local-files/?d=`` and ``/data/upload/`` URLs fetched from
the host given in ``/setup``, nothing else), and turning a falv record into the
prediction (:func:`falv.labeling.formats.label_studio_result`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falv.errors import FalvError

#: Options of the jobs /predict starts (sliding windows, so that segments can be found).
PREDICT_OPTIONS = {"window": 1.0, "stride": 0.5}


class LabelStudioError(FalvError):
    """A task or config this backend cannot answer (HTTP 400 for the whole request)."""


@dataclass(frozen=True)
class ProjectConfig:
    """The parts of a Label Studio labeling config that a video prediction needs."""

    video_name: str
    video_key: str  # the task data key, from value="$key"
    frame_rate: float | str | None = None  # a number, a "$key" of the task data, or None (the video's fps)
    timeline_name: str | None = None
    timeline_labels: tuple[str, ...] = ()
    choices_name: str | None = None
    choices: tuple[str, ...] = ()

    def fps_for(self, task: dict[str, Any]) -> float | None:
        rate = self.frame_rate
        if isinstance(rate, str):
            try:
                rate = float((task.get("data") or {}).get(rate.lstrip("$")))
            except (TypeError, ValueError):
                return None
        return float(rate) if rate else None


def parse_config(xml: str) -> ProjectConfig:
    """The ``<Video>``, ``<TimelineLabels>`` and ``<Choices>`` of a labeling config."""
    if not isinstance(xml, str) or not xml.strip():
        raise LabelStudioError("the labeling config is empty")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise LabelStudioError("the labeling config must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelStudioError(f"the labeling config is not valid XML ({exc})") from None
    videos = [e for e in root.iter() if e.tag == "Video"]
    if not videos:
        raise LabelStudioError("the labeling config has no <Video> tag: this backend labels videos")
    video = videos[0]
    name, value = video.get("name"), video.get("value", "")
    if not name or not value.startswith("$"):
        raise LabelStudioError('the <Video> tag needs a name and a value="$field"')
    rate_text = video.get("frameRate")
    frame_rate: float | str | None = None
    if rate_text:
        if rate_text.startswith("$"):
            frame_rate = rate_text
        else:
            try:
                frame_rate = float(rate_text)
            except ValueError:
                raise LabelStudioError(f"<Video frameRate={rate_text!r}> is not a number") from None
    timeline = next((e for e in root.iter() if e.tag == "TimelineLabels" and e.get("toName") == name), None)
    choices = next((e for e in root.iter() if e.tag == "Choices" and e.get("toName") == name), None)
    return ProjectConfig(
        video_name=name, video_key=value[1:], frame_rate=frame_rate,
        timeline_name=timeline.get("name") if timeline is not None else None,
        timeline_labels=tuple(e.get("value", "") for e in timeline.iter("Label")) if timeline is not None else (),
        choices_name=choices.get("name") if choices is not None else None,
        choices=tuple(e.get("value", "") for e in choices.iter("Choice")) if choices is not None else (),
    )


@dataclass
class Connection:
    """Where a project's Label Studio is (from /setup, or LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)."""

    hostname: str | None = None
    access_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_setup(cls, body: dict[str, Any]) -> Connection:
        return cls(hostname=body.get("hostname") or os.environ.get("LABEL_STUDIO_URL"),
                   access_token=body.get("access_token") or os.environ.get("LABEL_STUDIO_API_KEY"),
                   extra=dict(body.get("extra_params") or {}) if isinstance(body.get("extra_params"), dict) else {})


def video_source(task: dict[str, Any], config: ProjectConfig) -> str:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise LabelStudioError("a task has no data")
    url = data.get(config.video_key)
    if not isinstance(url, str) or not url:
        raise LabelStudioError(f"a task has no video under data.{config.video_key}")
    return url


def is_label_studio_url(url: str) -> bool:
    path = urllib.parse.urlsplit(url).path
    return path.startswith("/data/local-files/") or path.startswith("/data/upload/")


def fetch_video(url: str, connection: Connection, cache: Path, max_bytes: int, timeout: float = 60.0) -> Path:
    """Download a Label Studio-hosted video (``/data/local-files/?d=``, ``/data/upload/``)
    from the project's own host with its token; any other host is refused."""
    if not connection.hostname:
        raise LabelStudioError("this task's video is on Label Studio, but no host is known: "
                               "call /setup with hostname and access_token (or set LABEL_STUDIO_URL)")
    host = urllib.parse.urlsplit(connection.hostname)
    target = urllib.parse.urlsplit(urllib.parse.urljoin(connection.hostname.rstrip("/") + "/", url.lstrip("/")))
    if (target.scheme, target.netloc) != (host.scheme, host.netloc) or not is_label_studio_url(target.geturl()):
        raise LabelStudioError(f"refusing to fetch {url}: only Label Studio's own /data/ URLs on "
                               f"{connection.hostname} are fetched")
    suffix = Path(urllib.parse.unquote(urllib.parse.parse_qs(target.query).get("d", [target.path])[0])).suffix
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / (hashlib.sha1(target.geturl().encode()).hexdigest()[:20] + (suffix if len(suffix) <= 6 else ""))
    if dest.exists():
        return dest
    request = urllib.request.Request(target.geturl())
    if connection.access_token:
        request.add_header("Authorization", f"Token {connection.access_token}")
    part = dest.with_suffix(dest.suffix + ".part")
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise LabelStudioError(f"{url}: larger than the upload limit")
                out.write(chunk)
    except LabelStudioError:
        part.unlink(missing_ok=True)
        raise
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise LabelStudioError(f"cannot fetch {url} from {connection.hostname}: {exc}") from None
    os.replace(part, dest)
    return dest


def prediction(record: dict[str, Any] | None, config: ProjectConfig, task: dict[str, Any],
               model_version: str) -> dict[str, Any]:
    """One task's prediction in the protocol's shape: ``{"result", "score", "model_version"}``."""
    from falv.labeling.formats import label_studio_result
    from falv.labeling.records import LabelRecord

    if record is None or record.get("error"):
        return {"result": [], "score": 0.0, "model_version": model_version}
    rec = LabelRecord.from_dict(record)
    result = []
    for item in label_studio_result(rec, choices_name=config.choices_name, timeline_name=config.timeline_name,
                                    video_name=config.video_name, fps=config.fps_for(task)):
        # only the labels the project's config names (it may hold fewer classes than the model)
        if item["type"] == "choices":
            kept = [c for c in item["value"]["choices"] if c in config.choices]
            if kept:
                result.append({**item, "value": {"choices": kept}})
        elif item["value"]["timelinelabels"][0] in config.timeline_labels:
            result.append(item)
    score = float(rec.labels[0].score) if rec.labels else 0.0
    return {"result": result, "score": score, "model_version": model_version}


# -- training on a project's annotations (the START_TRAINING webhook) --------------------------------


def fetch_export(connection: Connection, project: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """The project's tasks with their annotations (``/api/projects/{id}/export?exportType=JSON``)."""
    import json

    if not connection.hostname:
        raise LabelStudioError("no Label Studio host is known for this project: call /setup first")
    url = f"{connection.hostname.rstrip('/')}/api/projects/{urllib.parse.quote(str(project))}/export?exportType=JSON"
    request = urllib.request.Request(url)
    if connection.access_token:
        request.add_header("Authorization", f"Token {connection.access_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise LabelStudioError(f"cannot read project {project}'s annotations from {connection.hostname}: {exc}") from None
    if not isinstance(data, list):
        raise LabelStudioError("Label Studio's export is not a list of tasks")
    return data


def make_trainer(project: str, connection: Connection, config: ProjectConfig, *, epochs: int | None = None,
                 timeout: float = 6 * 3600) -> Any:
    """A trainer for :meth:`falv.serve.service.LabelService.start_training`: fetch the project's
    annotations, point every task at a local copy of its video, and fine-tune the served
    model on them with ``falv train`` (a subprocess, so the server keeps answering)."""
    import json
    import subprocess
    import sys
    import time

    from falv.hub.io import atomic_write_text
    from falv.serve.service import confine

    def train(service: Any) -> tuple[Path, str]:
        settings = service.settings
        tasks = fetch_export(connection, project)
        for task in tasks:
            data = task.get("data") if isinstance(task.get("data"), dict) else {}
            try:
                url = video_source(task, config)
                local = (fetch_video(url, connection, settings.data_dir / "label-studio", settings.max_upload_bytes)
                         if is_label_studio_url(url) else confine(url, settings.allow_roots))
            except FalvError:
                continue  # the source counts it as skipped
            data["path"] = str(local)
            task["data"] = data
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = settings.data_dir / "training" / f"project{project}-{stamp}"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "labels.txt", "".join(f"{c}\n" for c in service.labels))  # the served order
        atomic_write_text(folder / "export.json", json.dumps(tasks))
        cmd = [sys.executable, "-m", "falv", "train", "--data", str(folder / "export.json"), "--init",
               str(service.current_model), "--out", str(folder / "run"), "--workers", "0"]
        if epochs:
            cmd += ["--epochs", str(int(epochs))]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        (folder / "train.log").write_text(run.stdout + run.stderr, encoding="utf-8")
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            raise LabelStudioError(f"falv train failed ({last}); see {folder / 'train.log'}")
        return folder / "run" / "best", f"falv:project{project}-{stamp}"

    return train
