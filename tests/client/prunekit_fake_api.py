"""A scriptable fake of the prunekit HTTP API over real HTTP (stdlib server on 127.0.0.1), for client tests.

Its bodies are built from the API's own models (prunekit/spec/api.py, as the real server's are) so they cannot
drift from the contract (docs/design/api-contract.md). It covers what the client needs: auth, problem+json
errors, idempotent submits, job progress scripts, events, Range downloads, and injected faults (5xx, dropped
connections, truncated bodies, server restarts).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel

from prunekit.client import RetryPolicy
from prunekit.reporting.samples import compress_report, inconclusive_report
from prunekit.spec.api import (
    Artifact,
    ErrorCode,
    Event,
    EventKind,
    EventList,
    FileInfo,
    FileKind,
    FileList,
    Job,
    JobError,
    JobList,
    JobStatus,
    Problem,
    Stage,
    Upload,
    UploadState,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookRedelivery,
    job_links,
)
from tests.client.fake_bodies import new_file, new_job, now, problem, progress_script, updated

GOOD_KEY = "good-key"
FAST_RETRY = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)


class SleepLog:
    """Records the delays a client asked for, sleeping only briefly."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        import time

        self.delays.append(seconds)
        time.sleep(min(seconds, 0.05))


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Fault:
    method: str
    path_re: str
    times: int
    # "status" | "drop" | "truncate" | "cut" (an event stream, after truncate_at events) | "sever" (closes the
    # connection after reading truncate_at bytes of the request body)
    action: str
    status: int = 503
    retry_after: str | None = None
    truncate_at: int = 0


@dataclass
class Plan:
    """What the next submitted job does: snapshots applied one per GET of the job."""

    outcome: str = "succeeded"  # succeeded | gate_missed | inconclusive | failed | canceled | never
    steps: int = 3
    artifact: bytes = field(default_factory=lambda: b"pruned-model-bytes" * 5000)
    artifact_name: str = "model.safetensors"
    wrong_sha: bool = False


class FakeApi:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys = {GOOD_KEY}
        self.requests: list[Recorded] = []
        self.files: dict[str, FileInfo] = {}
        self.file_bytes: dict[str, bytes] = {}
        self.jobs: dict[str, Job] = {}
        self.order: list[str] = []
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        self.artifacts: dict[str, bytes] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[Event]] = {}
        self.deliveries: dict[str, list[WebhookDelivery]] = {}
        self.sse = True  # False: a server from before live events, which answers every /events with the JSON list
        self.idem: dict[str, tuple[str, str]] = {}
        self.faults: list[Fault] = []
        self.plan = Plan()
        self.ignore_range = False
        self.uploads_enabled = True  # False: a server from before /v1/uploads (404)
        self.upload_chunk = 64 * 1024
        self.uploads: dict[str, Upload] = {}
        self.upload_bytes: dict[str, bytearray] = {}

    # -------------------------------------------------------------- test helpers

    def fail(
        self,
        method: str,
        path_re: str,
        times: int = 1,
        action: str = "status",
        status: int = 503,
        retry_after: str | None = None,
        truncate_at: int = 0,
    ) -> None:
        self.faults.append(Fault(method, path_re, times, action, status, retry_after, truncate_at))

    def calls(self, method: str, path_re: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path_re, r.path)]

    def add_job(
        self,
        plan: Plan | None = None,
        job_id: str | None = None,
        metadata: dict[str, str] | None = None,
        kind: str = "compress",
    ) -> str:
        """Create a job directly (as if submitted earlier)."""
        spec = {"version": 1, "kind": kind}
        return self._create_job(spec, "fil_x", None, plan or self.plan, job_id, metadata)

    def file_info(self, file_id: str) -> FileInfo:
        """A stored file's body; in use while a job that is not finished names it."""
        used = any(not j.terminal and file_id in (j.model_file_id, j.data_file_id) for j in self.jobs.values())
        return self.files[file_id].model_copy(update={"in_use": used})

    def matches(self, job: Job, query: dict[str, list[str]]) -> bool:
        """Whether a job passes GET /v1/jobs's filters: any listed status, the kind, every meta=key:value."""
        statuses = query.get("status") or []
        kinds = query.get("kind") or []
        pairs = [m.partition(":")[::2] for m in query.get("meta") or []]
        return (
            (not statuses or job.status in statuses)
            and (not kinds or job.kind == kinds[0])
            and all(job.metadata.get(k) == v for k, v in pairs)
        )

    # -------------------------------------------------------------- model

    def _create_job(
        self,
        spec: dict[str, Any],
        model_id: str,
        data_id: str | None,
        plan: Plan,
        job_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        job_id = job_id or f"job_{uuid.uuid4().hex[:16]}"
        script = progress_script(plan.steps)
        if plan.outcome != "never":
            script.append(self._final_snapshot(job_id, plan))
        self.jobs[job_id] = new_job(job_id, spec, model_id, data_id, metadata)
        self.order.insert(0, job_id)
        self.scripts[job_id] = script
        self.events[job_id] = []
        return job_id

    def _final_snapshot(self, job_id: str, plan: Plan) -> dict[str, Any]:
        final: dict[str, Any] = {"finished_at": now()}
        if plan.outcome in ("succeeded", "gate_missed", "inconclusive"):
            report = (
                inconclusive_report()
                if plan.outcome == "inconclusive"
                else compress_report(gate_missed=plan.outcome == "gate_missed")
            )
            self.reports[job_id] = report
            self.artifacts[job_id] = plan.artifact
            sha = hashlib.sha256(b"something else" if plan.wrong_sha else plan.artifact).hexdigest()
            final.update(
                status=JobStatus.SUCCEEDED,
                stage=Stage.REPORT,
                percent=100.0,
                gate_status=report["status"],
                gates=report["gates"],
                artifact=Artifact(name=plan.artifact_name, size=len(plan.artifact), sha256=sha),
                links=job_links(job_id, has_artifact=True, has_report=True),
            )
        elif plan.outcome == "failed":
            final.update(
                status=JobStatus.FAILED,
                error=JobError(code=ErrorCode.INVALID_MODEL, message="not a TorchScript archive"),
            )
        elif plan.outcome == "canceled":
            final.update(status=JobStatus.CANCELED)
        return final

    def _advance(self, job_id: str) -> Job:
        job = self.jobs[job_id]
        script = self.scripts.get(job_id) or []
        if script and not job.terminal:
            snap = script.pop(0)
            if snap.get("status") is JobStatus.RUNNING and job.started_at is None:
                snap["started_at"] = now()
            job = self.jobs[job_id] = updated(job, **snap)
            self._log(job)
        return job

    def _log(self, job: Job) -> None:
        evs = self.events[job.id]
        message = f"{job.status} {job.stage or ''}".strip()
        evs.append(
            Event(seq=len(evs) + 1, ts=now(), kind=EventKind.LOG, stage=job.stage, percent=job.percent, message=message)
        )


def _valid_metadata(metadata: Any) -> bool:
    """The real server's rule: at most 16 pairs, keys of letters, digits, '_.-' (1-64), string values."""
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return False
    return all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", k) for k, v in metadata.items())


def make_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            if isinstance(body, Problem):  # the real server names the request's path and omits absent `errors`
                body = body.model_copy(update={"instance": urlsplit(self.path).path})
            if isinstance(body, BaseModel):
                body = body.model_dump(mode="json", exclude_none=isinstance(body, Problem))
            data = json.dumps(body).encode()
            self.send_response(status)
            ctype = "application/problem+json" if status >= 400 else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if self._sever(method, parts.path):
                return
            body = self.rfile.read(length) if length else b""
            rec = Recorded(method, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
            with api.lock:
                api.requests.append(rec)
                fault = next(
                    (
                        f
                        for f in api.faults
                        if f.times > 0 and f.method == method and re.fullmatch(f.path_re, parts.path)
                    ),
                    None,
                )
                if fault is not None:
                    fault.times -= 1
            if fault is not None and fault.action == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if fault is not None and fault.action == "status":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._send_json(fault.status, problem(fault.status, "internal", "injected fault"), headers)
                return
            if parts.path == "/livez":
                self._send_json(200, {"status": "ok"})
                return
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in api.keys:
                self._send_json(
                    401, problem(401, "unauthorized", "missing or invalid API key"), {"WWW-Authenticate": "Bearer"}
                )
                return
            with api.lock:
                self._route(method, parts.path, parse_qs(parts.query), body, fault)

        def _sever(self, method: str, path: str) -> bool:
            """A "sever" fault: read part of the body, then close the connection without an answer."""
            with api.lock:
                fault = next(
                    (f for f in api.faults if f.times > 0 and f.action == "sever" and f.method == method),
                    None,
                )
                if fault is None or not re.fullmatch(fault.path_re, path):
                    return False
                fault.times -= 1
            self.rfile.read(fault.truncate_at)
            self.close_connection = True
            self.connection.shutdown(2)
            return True

        def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes, fault: Fault | None) -> None:
            m = re.fullmatch(r"/v1/jobs/([^/]+)(/[a-z./-]+)?", path)
            um = re.fullmatch(r"/v1/uploads/([^/]+)(/complete)?", path)
            if method == "POST" and path == "/v1/files":
                self._upload(body)
            elif path.startswith("/v1/uploads") and not api.uploads_enabled:
                self._send_json(404, problem(404, "not_found", "Not Found"))
            elif method == "POST" and path == "/v1/uploads":
                self._create_upload(body)
            elif um is not None and um.group(1) in api.uploads:
                self._resumable(method, um.group(1), bool(um.group(2)), body)
            elif um is not None:
                self._send_json(404, problem(404, "not_found", f"no upload {um.group(1)}"))
            elif method == "GET" and path == "/v1/files":
                self._list_files(query)
            elif fm := re.fullmatch(r"/v1/files/([^/]+)", path):
                self._file(method, fm.group(1))
            elif method == "POST" and path == "/v1/jobs":
                self._submit(body)
            elif method == "GET" and path == "/v1/jobs":
                self._list(query)
            elif m is not None:
                job_id, sub = m.group(1), m.group(2) or ""
                if job_id not in api.jobs:
                    self._send_json(404, problem(404, "not_found", f"no job {job_id}"))
                    return
                self._job(method, job_id, sub, query, fault)
            else:
                self._send_json(404, problem(404, "not_found", "no such route"))

        def _upload(self, body: bytes) -> None:
            ctype = self.headers.get("Content-Type", "")
            msg = BytesParser(policy=email_policy).parsebytes(
                f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
            )
            data, name, kind = None, "upload", "model"
            for part in msg.iter_parts():
                field_name = part.get_param("name", header="content-disposition")
                if field_name == "file":
                    data = part.get_payload(decode=True)
                    name = part.get_filename() or name
                elif field_name == "kind":
                    kind = part.get_content().strip()
            if data is None or kind not in {k.value for k in FileKind}:
                loc = "file" if data is None else "kind"
                self._send_json(422, problem(422, "validation_error", f"bad {loc}", [{"loc": loc, "msg": "invalid"}]))
                return
            file_id = f"fil_{uuid.uuid4().hex[:16]}"
            api.files[file_id] = new_file(file_id, data, name, kind)
            api.file_bytes[file_id] = data
            self._send_json(201, api.file_info(file_id))

        def _create_upload(self, body: bytes) -> None:
            req = json.loads(body)
            upload_id = f"upl_{uuid.uuid4().hex[:16]}"
            chunk = min(api.upload_chunk, req["size"])
            api.uploads[upload_id] = Upload(
                id=upload_id,
                name=req["name"],
                kind=FileKind(req.get("kind", "model")),
                size=req["size"],
                offset=0,
                chunk_size=chunk,
                state=UploadState.OPEN,
                sha256=req.get("sha256"),
                created_at=now(),
                expires_at=now(),
            )
            api.upload_bytes[upload_id] = bytearray()
            self._send_json(201, api.uploads[upload_id])

        def _resumable(self, method: str, upload_id: str, complete: bool, body: bytes) -> None:
            """The real server's rules: chunks at the offset, repeats acknowledged, sha256 checked on complete."""
            up, data = api.uploads[upload_id], api.upload_bytes[upload_id]
            if complete and method == "POST":
                digest = hashlib.sha256(data).hexdigest()
                if len(data) < up.size:
                    self._send_json(409, problem(409, "conflict", "not all bytes received"))
                elif (json.loads(body or b"{}").get("sha256") or digest) != digest:
                    self._send_json(422, problem(422, "checksum_mismatch", "sha256 differs"))
                else:
                    file_id = up.file_id or f"fil_{uuid.uuid4().hex[:16]}"
                    if up.file_id is None:
                        api.files[file_id] = new_file(file_id, bytes(data), up.name, up.kind)
                        api.file_bytes[file_id] = bytes(data)
                        api.uploads[upload_id] = up.model_copy(update={"state": UploadState.DONE, "file_id": file_id})
                    self._send_json(200, api.file_info(file_id))
                return
            if method == "PUT":
                m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
                if m is None or int(m.group(3)) != up.size or len(body) != int(m.group(2)) - int(m.group(1)) + 1:
                    self._send_json(416, problem(416, "range_not_satisfiable", "bad Content-Range"))
                    return
                start, end = int(m.group(1)), int(m.group(2))
                if start == len(data):
                    data.extend(body)
                elif end >= len(data):
                    self._send_json(409, problem(409, "upload_offset_mismatch", f"offset is {len(data)}"))
                    return
                up = api.uploads[upload_id] = up.model_copy(update={"offset": len(data)})
            self._send_json(200, up, {"Upload-Offset": str(up.offset)})

        def _list_files(self, query: dict[str, list[str]]) -> None:
            limit = int((query.get("limit") or ["50"])[0])
            start = int((query.get("cursor") or ["0"])[0])
            ids = list(api.files)[::-1][start : start + limit]  # newest first
            nxt = str(start + limit) if start + limit < len(api.files) else None
            self._send_json(200, FileList(items=[api.file_info(f) for f in ids], next_cursor=nxt))

        def _file(self, method: str, file_id: str) -> None:
            if file_id not in api.files:
                self._send_json(404, problem(404, "not_found", f"no file {file_id}"))
            elif method == "GET":
                self._send_json(200, api.file_info(file_id))
            elif method != "DELETE":
                self._send_json(404, problem(404, "not_found", "no such route"))
            elif api.file_info(file_id).in_use:
                self._send_json(409, problem(409, "conflict", f"file {file_id} is used by a queued or running job"))
            else:
                del api.files[file_id], api.file_bytes[file_id]
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def _submit(self, body: bytes) -> None:
            try:
                payload = json.loads(body)
            except ValueError:
                self._send_json(422, problem(422, "validation_error", "body is not JSON"))
                return
            spec = payload.get("spec")
            if not isinstance(spec, dict):
                self._send_json(422, problem(422, "validation_error", "bad spec", [{"loc": "spec", "msg": "required"}]))
                return
            sparsity = (spec.get("pruning") or {}).get("sparsity")
            if isinstance(sparsity, int | float) and sparsity >= 1:
                self._send_json(
                    422,
                    problem(
                        422,
                        "validation_error",
                        "invalid spec",
                        [{"loc": "pruning.sparsity", "msg": "Input should be less than 1"}],
                    ),
                )
                return
            metadata = payload.get("metadata") or {}
            if not _valid_metadata(metadata):
                self._send_json(
                    422, problem(422, "validation_error", "bad metadata", [{"loc": "metadata", "msg": "invalid"}])
                )
                return
            if payload.get("model_file_id") not in api.files:
                self._send_json(
                    422,
                    problem(
                        422, "validation_error", "unknown model file", [{"loc": "model_file_id", "msg": "no such file"}]
                    ),
                )
                return
            key = self.headers.get("Idempotency-Key")
            digest = hashlib.sha256(body).hexdigest()
            if key and key in api.idem:
                seen_digest, job_id = api.idem[key]
                if seen_digest != digest:
                    self._send_json(422, problem(422, "idempotency_mismatch", "key reused with another body"))
                    return
            else:
                job_id = api._create_job(
                    spec, payload["model_file_id"], payload.get("data_file_id"), api.plan, metadata=metadata
                )
                if key:
                    api.idem[key] = (digest, job_id)
            self._send_json(202, api.jobs[job_id], {"Location": f"/v1/jobs/{job_id}"})

        def _list(self, query: dict[str, list[str]]) -> None:
            limit = int((query.get("limit") or ["50"])[0])
            start = int((query.get("cursor") or ["0"])[0])
            ids = [j for j in api.order if api.matches(api.jobs[j], query)]
            page = ids[start : start + limit]
            nxt = str(start + limit) if start + limit < len(ids) else None
            self._send_json(200, JobList(items=[api.jobs[j] for j in page], next_cursor=nxt))

        def _job(self, method: str, job_id: str, sub: str, query: dict[str, list[str]], fault: Fault | None) -> None:
            job = api.jobs[job_id]
            if method == "GET" and sub == "":
                self._send_json(200, api._advance(job_id))
            elif method == "POST" and sub == "/cancel":
                if job.terminal:
                    self._send_json(409, problem(409, "invalid_state", f"job is {job.status}"))
                    return
                api.jobs[job_id] = updated(job, status=JobStatus.CANCELED, finished_at=now())
                api.scripts[job_id] = []
                self._send_json(202, api.jobs[job_id])
            elif method == "DELETE" and sub == "":
                if not job.terminal:
                    self._send_json(409, problem(409, "invalid_state", "job is not finished"))
                    return
                del api.jobs[job_id]
                api.order.remove(job_id)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif method == "GET" and sub == "/events" and api.sse and "event-stream" in self.headers.get("Accept", ""):
                self._event_stream(job_id, fault)
            elif sub.startswith("/webhook-deliveries"):
                self._webhook_deliveries(method, job_id, sub)
            elif method == "GET" and sub == "/events":
                after = int((query.get("after") or ["0"])[0])
                items = [e for e in api.events[job_id] if e.seq > after]
                self._send_json(200, EventList(items=items, next_after=items[-1].seq if items else after))
            elif method == "GET" and sub == "/report":
                if job_id not in api.reports or job.status is not JobStatus.SUCCEEDED:
                    self._send_json(409, problem(409, "not_ready", "no report yet"))
                    return
                self._send_json(200, api.reports[job_id])
            elif method == "GET" and sub == "/report.html":
                if job_id not in api.reports or job.status is not JobStatus.SUCCEEDED:
                    self._send_json(409, problem(409, "not_ready", "no report yet"))
                    return
                data = f"<!DOCTYPE html><html><body><h1>report {job_id}</h1></body></html>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif method == "GET" and sub == "/artifact":
                self._artifact(job_id, fault)
            else:
                self._send_json(404, problem(404, "not_found", "no such route"))

        def _event_stream(self, job_id: str, fault: Fault | None) -> None:
            """SSE like the real server's: the events after Last-Event-ID while the job runs its script, then an
            `end` frame; a "cut" fault closes the stream after `truncate_at` events, without the `end` frame."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            last, sent = int(self.headers.get("Last-Event-ID") or 0), 0
            while True:
                for e in [e for e in api.events[job_id] if e.seq > last]:
                    if fault is not None and fault.action == "cut" and sent == fault.truncate_at:
                        return
                    self.wfile.write(f"id: {e.seq}\nevent: {e.kind}\ndata: {e.model_dump_json()}\n\n".encode())
                    self.wfile.write(b": keep-alive\n\n")
                    last, sent = e.seq, sent + 1
                if api.jobs[job_id].terminal:
                    end = json.dumps({"job_id": job_id, "status": api.jobs[job_id].status.value})
                    self.wfile.write(f"event: end\ndata: {end}\n\n".encode())
                    return
                api._advance(job_id)

        def _webhook_deliveries(self, method: str, job_id: str, sub: str) -> None:
            job, log = api.jobs[job_id], api.deliveries.setdefault(job_id, [])
            if method == "GET" and sub == "/webhook-deliveries":
                self._send_json(200, WebhookDeliveryList(items=log, next_cursor=None))
            elif method == "POST" and sub == "/webhook-deliveries/redeliver":
                if not job.terminal:
                    self._send_json(409, problem(409, "invalid_state", f"job {job_id} is {job.status}"))
                    return
                kind, msg_id = f"job.{job.status}", f"msg_{job_id}_{job.status}"
                log.append(
                    WebhookDelivery(
                        id=len(log) + 1,
                        attempt=1,
                        created_at=now(),
                        event_type=kind,
                        message_id=msg_id,
                        ok=True,
                        status_code=200,
                        error=None,
                        duration_ms=12.0,
                    )
                )
                self._send_json(
                    202, WebhookRedelivery(job_id=job_id, event_type=kind, message_id=msg_id, webhook_state="pending")
                )
            else:
                self._send_json(404, problem(404, "not_found", "no such route"))

        def _artifact(self, job_id: str, fault: Fault | None) -> None:
            data = api.artifacts.get(job_id)
            if data is None or api.jobs[job_id].status is not JobStatus.SUCCEEDED:
                self._send_json(409, problem(409, "not_ready", "no artifact yet"))
                return
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            start = 0
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            partial = bool(rng) and not api.ignore_range and (if_range is None or if_range == etag)
            if partial:
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                start = int(m.group(1)) if m else 0
                if start >= len(data):
                    self._send_json(
                        416,
                        problem(416, "range_not_satisfiable", "bad range"),
                        {"Content-Range": f"bytes */{len(data)}"},
                    )
                    return
            chunk = data[start:]
            self.send_response(206 if partial else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Disposition", 'attachment; filename="model.safetensors"')
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if fault is not None and fault.action == "truncate":
                self.wfile.write(chunk[: fault.truncate_at])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(chunk)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def do_PUT(self) -> None:
            self._handle("PUT")

    return Handler


class FakeServer:
    """Runs FakeApi on 127.0.0.1 in a thread; stop() and start() keep the port (an API restart)."""

    def __init__(self, api: FakeApi | None = None) -> None:
        self.api = api or FakeApi()
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), make_handler(self.api))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
