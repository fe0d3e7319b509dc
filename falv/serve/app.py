"""The HTTP app of ``falv serve`` (FastAPI): routing, validation, auth and persistence
around :class:`falv.serve.service.LabelService`; the labeling is the engine's.

Every error is JSON ``{"error": {"type", "message"}}`` with a 4xx status: malformed
JSON or multipart (400), a bad token (401), a path outside ``--allow-root`` (403), an
unknown job (404), an upload over ``--max-upload-mb`` (413), a file that is not a video
(415), bad options (422), a full queue (429), a server whose engine stopped (503).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import re
import shutil
import tempfile
import uuid
import zipfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from falv.errors import ConfigError, FalvError
from falv.serve.jobs import FINAL, Job
from falv.serve.service import (JOB_OPTIONS, LabelService, PathNotAllowed, QueueFull, confine, job_options,
                                stream_source)

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Label Studio events that also start a fine-tune with --train-on-annotations.
TRAINING_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers


class BodyTooLarge(Exception):
    pass


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": " ".join(str(message).split())}}, status_code=status,
                        headers=headers)


class BodyLimit:
    """ASGI middleware: request bodies over ``max_bytes`` end in 413 while they stream in
    (the whole upload is never buffered first)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        limit = self.max_bytes + 64 * 1024  # multipart framing and form fields
        if length is not None and length.isdigit() and int(length) > limit:
            await _error(413, "too_large", f"the request is larger than the limit of {self.max_bytes} bytes")(
                scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


# signatures of files that are certainly not videos (checked on uploads)
_NOT_VIDEO = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
              (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"BM", "a BMP image"))


def sniff_upload(head: bytes) -> str | None:
    """Why an upload is certainly not a video (``None``: it may be one; decoding decides)."""
    if not head:
        return "the file is empty"
    for magic, what in _NOT_VIDEO:
        if head.startswith(magic):
            return f"the file is {what}, not a video"
    sample = head[:512]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "the file is text, not a video"
    return None


_SAFE_NAME = re.compile(r"[^\w.\- ]+")


def create_app(service: LabelService, *, manage: bool = True) -> FastAPI:
    """The app; with ``manage`` its lifespan starts and stops the service."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(title="falv serve", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)

    # -- errors: always JSON, always 4xx for what a request did wrong ------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, "invalid_request", f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        return _error(413, "too_large", f"the upload is larger than the limit of {settings.max_upload_mb:g} MB")

    @app.exception_handler(QueueFull)
    async def _full(_request: Request, exc: QueueFull) -> JSONResponse:
        return _error(429, "queue_full", str(exc), {"Retry-After": "5"})

    @app.exception_handler(PathNotAllowed)
    async def _forbidden(_request: Request, exc: PathNotAllowed) -> JSONResponse:
        return _error(403, "forbidden", str(exc))

    @app.exception_handler(FalvError)
    async def _falv(_request: Request, exc: FalvError) -> JSONResponse:
        return _error(422, "invalid_options" if isinstance(exc, ConfigError) else "invalid_request", str(exc))

    # -- auth ----------------------------------------------------------------------------------------
    def check_token(request: Request, *, allow_query: bool = False) -> None:
        if not settings.token:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else None
        if token is None and allow_query:
            token = request.query_params.get("token")
        if token is None or not hmac.compare_digest(token.encode(), settings.token.encode()):
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required",
                           {"WWW-Authenticate": "Bearer"})

    def check_basic(request: Request) -> None:
        if not settings.basic_auth:
            return
        given = request.headers.get("authorization", "")
        try:
            ok = given.lower().startswith("basic ") and hmac.compare_digest(
                base64.b64decode(given[6:].strip(), validate=True), settings.basic_auth.encode())
        except ValueError:
            ok = False
        if not ok:
            raise ApiError(401, "unauthorized", "HTTP Basic credentials are required",
                           {"WWW-Authenticate": 'Basic realm="falv"'})

    def get_job(job_id: str) -> Job:
        job = service.store.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null", parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        return body

    def running() -> None:
        if service.state == "ERROR":
            raise ApiError(503, "unavailable", f"the labeling engine stopped: {service.error}")

    # -- health and the page ---------------------------------------------------------------------------
    @app.get("/health")
    def health() -> dict[str, Any]:
        status = {"UP": "UP", "starting": "UP"}.get(service.state, service.state)
        return {"status": status, "model_class": service.model_class, "model_version": service.model_version,
                "labels": len(service.labels), "queued": service.store.count("queued"),
                "running": service.store.count("running"), "error": service.error}

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if not page.exists():
            raise ApiError(404, "not_found", "the review page is not installed with this copy of falv")
        return FileResponse(page, media_type="text/html")

    if STATIC.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- jobs ------------------------------------------------------------------------------------------
    @app.get("/v1/labels")
    def labels(request: Request) -> dict[str, Any]:
        check_token(request)
        return {"labels": service.labels, "multilabel": service.multilabel}

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request) -> dict[str, Any]:
        check_token(request)
        running()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            job = await _submit_upload(request)
        elif kind in ("application/json", ""):
            body = await json_body(request)
            path = body.pop("path", None)
            if not isinstance(path, str):
                raise ApiError(422, "invalid_request", "give a 'path' (a string) or upload a 'file'")
            options = job_options(body)
            resolved = confine(path, settings.allow_roots)
            if not resolved.is_file():
                raise ApiError(404, "not_found", f"{path}: no such file")
            job = service.submit(resolved, resolved.name, options)
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with a 'file' or JSON with a 'path'")
        return {"id": job.id, "status": job.status}

    async def _submit_upload(request: Request) -> Job:
        form = await request.form(max_files=1, max_fields=len(JOB_OPTIONS) + 4)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "invalid_request", "the multipart form needs a 'file' field with the video")
            options = job_options({k: v for k, v in form.items() if k != "file"})
            job_id = uuid.uuid4().hex[:16]
            folder = service.uploads / job_id
            folder.mkdir(parents=True)
            name = _SAFE_NAME.sub("_", Path(upload.filename or "video").name).strip(" .") or "video"
            dest = folder / name[-120:]
            try:
                head = await upload.read(4096)
                why = sniff_upload(head)
                if why is not None:
                    raise ApiError(415, "not_a_video", why)
                size = len(head)
                with open(dest, "wb") as out:
                    out.write(head)
                    while chunk := await upload.read(1 << 20):
                        size += len(chunk)
                        if size > settings.max_upload_bytes:
                            raise BodyTooLarge()
                        out.write(chunk)
                return service.submit(dest, name, options, upload=True, job_id=job_id)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        finally:
            await form.close()

    @app.get("/v1/jobs")
    def list_jobs(request: Request, limit: int = 100, status: str | None = None) -> dict[str, Any]:
        check_token(request)
        if not 1 <= limit <= 10_000:
            raise ApiError(422, "invalid_request", "limit must be between 1 and 10000")
        jobs = service.store.list(limit, status)
        return {"jobs": [j.to_dict(record=False) for j in jobs]}

    @app.get("/v1/jobs/{job_id}")
    def job(request: Request, job_id: str) -> dict[str, Any]:
        check_token(request)
        return get_job(job_id).to_dict()

    @app.delete("/v1/jobs/{job_id}")
    def cancel(request: Request, job_id: str) -> dict[str, Any]:
        check_token(request)
        get_job(job_id)
        job = service.cancel(job_id)
        return job.to_dict(record=False) if job else {}

    @app.get("/v1/jobs/{job_id}/events")
    async def events(request: Request, job_id: str) -> StreamingResponse:
        check_token(request)
        get_job(job_id)

        async def stream() -> Any:
            last = None
            idle = 0.0
            while True:
                if await request.is_disconnected():
                    return
                current = service.store.get(job_id)
                if current is None:
                    return
                view = current.to_dict(record=False)
                if view != last:
                    last = view
                    yield f"event: status\ndata: {json.dumps(view)}\n\n"
                    idle = 0.0
                    if current.status in FINAL:
                        return
                elif idle >= 15:
                    yield ": keep-alive\n\n"
                    idle = 0.0
                await asyncio.sleep(0.2)
                idle += 0.2

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/video")
    def video(request: Request, job_id: str) -> FileResponse:
        check_token(request, allow_query=True)  # a <video src> cannot send headers
        path = Path(get_job(job_id).path)
        if not path.is_file():
            raise ApiError(404, "not_found", "the video file is gone")
        return FileResponse(path)

    # -- corrections -----------------------------------------------------------------------------------
    @app.get("/v1/jobs/{job_id}/corrections")
    def corrections(request: Request, job_id: str) -> dict[str, Any]:
        check_token(request)
        return _corrections_doc(get_job(job_id))

    @app.put("/v1/jobs/{job_id}/corrections")
    async def save_corrections(request: Request, job_id: str) -> dict[str, Any]:
        check_token(request)
        job = get_job(job_id)
        if job.status != "done":
            raise ApiError(409, "not_done", f"job {job_id} is {job.status}; only a labelled video can be corrected")
        doc = _check_corrections(await json_body(request), job)
        service.store.save_corrections(job_id, doc)
        return _corrections_doc(job)

    def _corrections_doc(job: Job) -> dict[str, Any]:
        saved = service.store.corrections(job.id)
        if saved is not None:
            doc, stamp = saved
            return {"job": job.id, **doc, "saved": stamp}
        from falv.labeling.formats import _video_choices  # what a labeling tool pre-selects
        from falv.labeling.records import LabelRecord

        if job.record is None:
            return {"job": job.id, "labels": [], "segments": [], "saved": None}
        record = LabelRecord.from_dict(job.record)
        labels = [label for label, _ in _video_choices(record, None)]
        segments = [{"label": s.label, "start": s.start, "end": s.end} for s in record.segments]
        return {"job": job.id, "labels": labels, "segments": segments, "saved": None}

    def _check_corrections(body: dict[str, Any], job: Job) -> dict[str, Any]:
        known = set(service.labels)
        labels = body.get("labels", [])
        segments = body.get("segments", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ApiError(422, "invalid_corrections", "labels must be a list of label names")
        if not isinstance(segments, list):
            raise ApiError(422, "invalid_corrections", "segments must be a list")
        unknown = sorted(set(labels) - known)
        duration = float((job.record or {}).get("duration") or 0.0)
        clean = []
        for i, seg in enumerate(segments):
            if not isinstance(seg, dict) or set(seg) - {"label", "start", "end", "status"}:
                raise ApiError(422, "invalid_corrections", f"segment {i} must be {{label, start, end}}")
            label, start, end = seg.get("label"), seg.get("start"), seg.get("end")
            if not isinstance(label, str) or label not in known:
                unknown.append(str(label))
                continue
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)):
                raise ApiError(422, "invalid_corrections", f"segment {i}: start and end must be numbers")
            if not (0 <= start < end) or (duration and end > duration + 1e-3):
                raise ApiError(422, "invalid_corrections",
                               f"segment {i}: needs 0 <= start < end <= {duration:g} s, got {start}-{end}")
            clean.append({"label": label, "start": float(start), "end": float(end)})
        if unknown:
            raise ApiError(422, "unknown_label", f"unknown label(s) {', '.join(sorted(set(unknown)))}; "
                                                 f"the model's labels are {', '.join(service.labels)}")
        return {"labels": list(dict.fromkeys(labels)), "segments": sorted(clean, key=lambda s: (s["start"], s["end"]))}

    @app.get("/v1/corrections/export")
    def export_corrections(request: Request, format: str = "json") -> Response:
        check_token(request)
        from falv.serve.corrections import write_training_source

        jobs = service.store.by_ids(service.store.corrected_jobs())
        docs = [(j, _corrections_doc(j)) for j in jobs]
        summary = write_training_source(service.settings.data_dir / "corrections", docs, service.labels)
        if format == "csv":
            return Response(Path(summary["csv"]).read_text(encoding="utf-8"), media_type="text/csv")
        if format != "json":
            raise ApiError(422, "invalid_request", "format must be json or csv")
        return JSONResponse(summary)

    # -- exports -------------------------------------------------------------------------------------
    @app.get("/v1/export")
    def export(request: Request, formats: str = "jsonl", ids: str | None = None) -> Response:
        check_token(request)
        from falv.labeling.formats import FormatError, normalize_format, write_formats, write_jsonl

        try:
            names = list(dict.fromkeys(normalize_format(f) for f in formats.split(",") if f.strip()))
        except FormatError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        from falv.labeling.store import newest_per_input

        chosen = service.store.by_ids(ids.split(",")) if ids else service.store.list(10_000)[::-1]  # oldest first
        # one record per input, as in labels.jsonl: the newest job's (a file labelled again)
        records = newest_per_input(j.record for j in sorted(chosen, key=lambda j: j.created)
                                   if j.record is not None)
        buffer = io.BytesIO()
        with tempfile.TemporaryDirectory(prefix="falv-export-") as tmp:
            if "jsonl" in names:
                write_jsonl(records, tmp)
            others = [n for n in names if n != "jsonl"]
            if others:
                write_formats(records, tmp, others, classes=service.labels)
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
                for file in sorted(Path(tmp).rglob("*")):
                    if file.is_file():
                        zf.write(file, file.relative_to(tmp).as_posix())
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="falv-labels.zip"'})

    # -- live streams (falv stream's generator, on a websocket) -----------------------------------
    streams = {"open": 0}

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        """``/v1/stream?source=S[&window=W&stride=S&top_k=K&threshold=T&token=T]``: one JSON
        message per event of :func:`falv.labeling.stream.label_stream` (windows, closed
        segments, warnings, the end), until the source ends or the client goes."""
        import threading

        from falv.labeling.stream import label_stream

        query = ws.query_params
        await ws.accept()

        async def refuse(code: int, kind: str, message: str) -> None:
            await ws.send_json({"type": "error", "error": {"type": kind, "message": message}})
            await ws.close(code=code)

        if settings.token and not hmac.compare_digest(
                (query.get("token") or _bearer(ws.headers.get("authorization", "")) or "").encode(),
                settings.token.encode()):
            await refuse(1008, "unauthorized", "a valid token is required (?token= or Authorization: Bearer)")
            return
        if service.state == "ERROR":
            await refuse(1011, "unavailable", f"the labeling engine stopped: {service.error}")
            return
        try:
            source = stream_source(query.get("source") or "", settings)
            timeout = float(query.get("timeout") or 10.0)
            if not 0 < timeout < 3600:
                raise ConfigError("timeout must be between 0 and 3600 seconds")
            options = job_options({k: v for k, v in query.items() if k not in ("source", "token", "timeout")})
        except (FalvError, ValueError) as exc:
            await refuse(1008, "forbidden" if isinstance(exc, PathNotAllowed) else "invalid_options", str(exc))
            return
        if streams["open"] >= settings.max_streams:
            await refuse(1013, "busy", f"{settings.max_streams} streams are open; try again later")
            return
        streams["open"] += 1
        stop = threading.Event()
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        labels = dict(options)
        window, stride = labels.pop("window", None), labels.pop("stride", None)  # default: the model's clip
        if "threshold" in labels:
            labels["background_threshold"] = labels.pop("threshold")

        def produce() -> None:
            try:
                for event in label_stream(source, service.current_model, window=window, stride=stride, stop=stop,
                                          timeout=timeout, precision=settings.precision, device=settings.device,
                                          **labels):
                    loop.call_soon_threadsafe(events.put_nowait, event)
            except Exception as exc:  # a source that cannot be opened, a model that broke
                loop.call_soon_threadsafe(events.put_nowait, {
                    "type": "error", "error": {"type": getattr(exc, "code", type(exc).__name__), "message": str(exc)}})
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        threading.Thread(target=produce, name="falv-stream", daemon=True).start()
        try:
            while (event := await events.get()) is not None:
                await ws.send_json(event)
            await ws.close()
        except WebSocketDisconnect:
            pass
        finally:
            stop.set()
            streams["open"] -= 1

    # -- Label Studio's ML backend -------------------------------------------------------------------
    from falv.serve import labelstudio as ls

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        check_basic(request)
        body = await json_body(request)
        project = str(body.get("project") or "").split(".")[0]
        schema = body.get("schema") or body.get("label_config")
        if schema is not None:
            ls.parse_config(schema)  # a config this backend cannot answer is an error now, not at /predict
        connection = ls.Connection.from_setup(body)
        service.store.put(f"ls:{project}", {"schema": schema, "hostname": connection.hostname,
                                            "access_token": connection.access_token, "extra": connection.extra})
        return {"model_version": service.model_version}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        check_basic(request)
        running()
        body = await json_body(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise ApiError(400, "invalid_request", "the body needs 'tasks', a list")
        project = str(body.get("project") or "").split(".")[0]
        stored = service.store.fetch(f"ls:{project}", {}) or {}
        schema = body.get("label_config") or stored.get("schema")
        if not schema:
            raise ApiError(400, "invalid_request", "no label_config in the request and none from /setup")
        config = ls.parse_config(schema)
        connection = ls.Connection(hostname=stored.get("hostname") or ls.Connection.from_setup({}).hostname,
                                   access_token=stored.get("access_token") or ls.Connection.from_setup({}).access_token)
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        extra = stored.get("extra") if isinstance(stored.get("extra"), dict) else {}  # the backend's extra_params
        options = job_options({**ls.PREDICT_OPTIONS, **{k: v for k, v in extra.items() if k in JOB_OPTIONS},
                               **{k: v for k, v in params.items() if k in JOB_OPTIONS}})
        return await asyncio.to_thread(_predict, tasks, config, connection, options)

    def _predict(tasks: list[Any], config: Any, connection: Any, options: dict[str, Any]) -> dict[str, Any]:
        submitted: list[str | None] = []
        for task in tasks:
            try:
                url = ls.video_source(task, config)
                if ls.is_label_studio_url(url):
                    path = ls.fetch_video(url, connection, settings.data_dir / "label-studio",
                                          settings.max_upload_bytes)
                else:
                    path = confine(url, settings.allow_roots)
                submitted.append(service.submit(path, path.name, options).id)
            except (FalvError, OSError) as exc:
                log.warning("predict: a task cannot be labelled: %s", exc)
                submitted.append(None)
        results = []
        for task, job_id in zip(tasks, submitted):
            job = service.wait(job_id, timeout=600) if job_id else None
            results.append(ls.prediction(job.record if job else None, config, task, service.model_version))
        return {"results": results, "model_version": service.model_version}

    @app.post("/webhook")
    async def webhook(request: Request) -> JSONResponse:
        check_basic(request)
        body = await json_body(request)
        action = body.get("action")
        if not isinstance(action, str):
            raise ApiError(400, "invalid_request", "the body needs an 'action'")
        trains = action == "START_TRAINING" or (settings.train_on_annotations and action in TRAINING_EVENTS)
        if not trains:
            return JSONResponse({"status": "ignored", "action": action})
        project_info = body.get("project")
        project = str(project_info.get("id") if isinstance(project_info, dict) else project_info or "")
        stored = service.store.fetch(f"ls:{project}")
        if not project or not stored or not stored.get("schema"):
            raise ApiError(400, "invalid_request", f"project {project or '?'} has not called /setup: its labeling "
                                                   "config and host are unknown")
        connection = ls.Connection(hostname=stored.get("hostname"), access_token=stored.get("access_token"))
        extra = stored.get("extra") or {}
        epochs = extra.get("epochs") if isinstance(extra.get("epochs"), int) else settings.train_epochs
        trainer = ls.make_trainer(project, connection, ls.parse_config(stored["schema"]), epochs=epochs)
        return JSONResponse(service.start_training(trainer), status_code=201)

    @app.get("/v1/training")
    def training(request: Request) -> dict[str, Any]:
        check_token(request)
        return {**service.training, "model_version": service.model_version}

    return app


def _bearer(header: str) -> str | None:
    return header[7:] if header.lower().startswith("bearer ") else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # strict JSON: no NaN or Infinity


def _version() -> str:
    from falv import __version__

    return __version__
