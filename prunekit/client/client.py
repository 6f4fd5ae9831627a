"""A small httpx client for the prunekit HTTP API (docs/design/api-contract.md), light enough for CI images."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar, cast
from urllib.parse import quote

import httpx
import pydantic

from prunekit.client.errors import (
    ApiError,
    AuthError,
    ConflictError,
    IntegrityError,
    NotFoundError,
    NotReadyError,
    PrunekitError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    WaitTimeoutError,
    error_from_problem,
)
from prunekit.client.sse import Frame, frames
from prunekit.spec.api import (
    Event,
    EventList,
    FileInfo,
    FileList,
    Job,
    JobList,
    Upload,
    WebhookDeliveryList,
    WebhookRedelivery,
)

ENV_SERVER = "PRUNEKIT_SERVER"
ENV_API_KEY = "PRUNEKIT_API_KEY"
DEFAULT_SERVER = "http://127.0.0.1:8000"
_CHUNK = 1 << 16
# Files from this size on go through the resumable protocol (/v1/uploads); smaller ones in one multipart request.
RESUMABLE_THRESHOLD = 64 * 1024 * 1024
_READ = 1 << 20  # bytes read from disk at a time while streaming a chunk
ProgressCallback = Callable[[int, int], None]

# The request never reached the server: retrying cannot duplicate anything, whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# The request may have been processed: retried only when repeating it is harmless.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is repeated on transient failures."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 500, 502, 503, 504}))

    def should_retry_status(self, status: int) -> bool:
        # 501/505 are permanent; every other 5xx may be a restart or an overloaded proxy.
        return status in self.retry_statuses or (status >= 500 and status not in (501, 505))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter (half fixed, half random) so clients do not retry in lockstep."""
        base = min(self.max_backoff, self.backoff * (2**attempt))
        wait = base / 2 + random.uniform(0, base / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    resumed: bool = False
    skipped: bool = False  # the file was already there with the right sha256


FilesFactory = Callable[[contextlib.ExitStack], Mapping[str, Any]]
_Body = TypeVar("_Body", bound=pydantic.BaseModel)


class PrunekitClient:
    """Typed access to a prunekit server; every call raises a `prunekit.client.errors` type on failure."""

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        resumable_threshold: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        # Files from this many bytes on are sent in resumable chunks (/v1/uploads).
        self.resumable_threshold = RESUMABLE_THRESHOLD if resumable_threshold is None else resumable_threshold
        self._sleep = sleep
        headers = {"User-Agent": f"prunekit-client/{_version()}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> PrunekitClient:
        """Build a client from PRUNEKIT_SERVER and PRUNEKIT_API_KEY."""
        return cls(os.environ.get(ENV_SERVER, DEFAULT_SERVER), os.environ.get(ENV_API_KEY), **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrunekitClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- core

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Mapping[str, Any] | None = None,
        files: FilesFactory | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send one request with retries; returns a 2xx/3xx response (streamed ones must be closed by the caller).

        `attempts` overrides the policy's count: a caller that runs its own outage loop asks for one.
        """
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        last_exc: Exception | None = None
        attempts = attempts or self.retry.attempts
        for attempt in range(attempts):
            with contextlib.ExitStack() as stack:
                try:
                    request = self._http.build_request(
                        method,
                        path,
                        params=clean_params or None,
                        json=json_body,
                        data=data,
                        # Fresh file handles each attempt, so a retried upload starts at byte 0.
                        files=files(stack) if files else None,
                        headers=headers,
                    )
                    response = self._http.send(request, stream=stream)
                except _NOT_SENT as exc:
                    last_exc = exc
                except _MAYBE_SENT as exc:
                    if not idempotent:
                        raise UnreachableError(f"no answer from {self.base_url} to {method} {path}: {exc}") from exc
                    last_exc = exc
                else:
                    if response.status_code < 400:
                        return response
                    retryable = response.status_code == 429 or (
                        idempotent and self.retry.should_retry_status(response.status_code)
                    )
                    if not retryable or attempt == attempts - 1:
                        raise self._error(response)
                    retry_after = _retry_after(response)
                    response.close()
                    self._sleep(self.retry.delay(attempt, retry_after))
                    continue
            if attempt < attempts - 1:
                self._sleep(self.retry.delay(attempt))
        raise UnreachableError(f"cannot reach {self.base_url} ({method} {path}): {last_exc}") from last_exc

    def _error(self, response: httpx.Response) -> ApiError:
        try:
            response.read()
            text = response.text
        except httpx.HTTPError:
            text = ""
        problem: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            body = json.loads(text) if text else None
            if isinstance(body, dict):
                problem = body
        response.close()
        return error_from_problem(response.status_code, problem, "" if problem else text)

    def _json(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> Any:
        response = self._send(method, path, idempotent=idempotent, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(response.status_code, "bad_response", "the server sent no JSON", str(exc)) from exc

    def _parse(self, model: type[_Body], method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> _Body:
        """Send a request (retried if `idempotent`) and read the answer as one of the models of prunekit/spec/api.py."""
        response = self._send(method, path, idempotent=idempotent, **kwargs)
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            detail = f"{method} {path} did not answer with a valid {model.__name__}: {exc}"
            raise ServerError(response.status_code, "bad_response", "unexpected response body", detail) from exc

    # ---------------------------------------------------------------- ops

    def livez(self) -> dict[str, Any]:
        """GET /livez."""
        return cast(dict[str, Any], self._json("GET", "/livez"))

    # ---------------------------------------------------------------- files

    def upload_file(
        self, path: str | Path, kind: str | None = None, on_progress: ProgressCallback | None = None
    ) -> FileInfo:
        """Upload a file: in resumable chunks from `resumable_threshold` bytes on (a dropped connection resumes at
        the server's offset), else streamed to POST /v1/files; `on_progress(sent, total)` follows the bytes."""
        p = Path(path)
        size = p.stat().st_size
        if size >= self.resumable_threshold:
            try:
                upload = self._parse(
                    Upload, "POST", "/v1/uploads", json_body={"name": p.name, "kind": kind or "model", "size": size}
                )
            except NotFoundError:
                pass  # a server from before /v1/uploads: one multipart request
            else:
                return self._upload_chunks(p, upload, on_progress)
        return self._upload_multipart(p, kind, size, on_progress)

    def _upload_multipart(self, p: Path, kind: str | None, size: int, on_progress: ProgressCallback | None) -> FileInfo:
        """Stream a file to POST /v1/files; repeating it after a lost answer only leaves an unused file."""

        def files(stack: contextlib.ExitStack) -> Mapping[str, Any]:
            handle: IO[bytes] = stack.enter_context(p.open("rb"))
            if on_progress is not None:
                handle = cast(IO[bytes], _ProgressReader(handle, size, on_progress))
            return {"file": (p.name, handle, "application/octet-stream")}

        return self._parse(FileInfo, "POST", "/v1/files", data={"kind": kind} if kind else None, files=files)

    def _upload_chunks(self, p: Path, upload: Upload, on_progress: ProgressCallback | None) -> FileInfo:
        """Send the chunks from the server's offset on; after a failure ask for the offset and go on from there."""
        digest = hashlib.sha256()
        offset, failures = 0, 0
        with p.open("rb") as fh:
            while offset < upload.size:
                start, end = offset, min(offset + upload.chunk_size, upload.size) - 1
                attempt = digest.copy()  # adopted only once the server holds the whole chunk
                try:
                    offset = self._put_chunk(upload, fh, start, end, attempt, on_progress)
                    failures = 0
                except (httpx.TransportError, ServerError, ConflictError) as exc:
                    failures += 1
                    if failures >= self.retry.attempts * 2:
                        raise UnreachableError(f"upload of {p.name} to {self.base_url} keeps failing: {exc}") from exc
                    self._sleep(self.retry.delay(min(failures - 1, 5)))
                    offset = self._upload_offset(upload.id)  # the chunk either arrived whole or not at all
                    if on_progress is not None:
                        on_progress(offset, upload.size)
                if offset == end + 1:
                    digest = attempt
                elif offset != start:
                    raise IntegrityError(
                        f"upload {upload.id}: the server reports offset {offset}, not {start} or {end + 1}"
                    )
        return self._complete_upload(upload.id, digest.hexdigest())

    def _put_chunk(
        self,
        upload: Upload,
        fh: IO[bytes],
        start: int,
        end: int,
        digest: Any,
        on_progress: ProgressCallback | None,
    ) -> int:
        """PUT bytes start..end streamed from `fh` (hashed on the way); returns the server's new offset."""

        def body() -> Iterator[bytes]:
            fh.seek(start)
            left, sent = end - start + 1, start
            while left > 0:
                data = fh.read(min(_READ, left))
                if not data:
                    raise IntegrityError(f"{fh.name} got shorter while it was being uploaded")
                digest.update(data)
                left, sent = left - len(data), sent + len(data)
                yield data
                if on_progress is not None:
                    on_progress(sent, upload.size)

        headers = {
            "Content-Range": f"bytes {start}-{end}/{upload.size}",
            "Content-Length": str(end - start + 1),
            "Content-Type": "application/octet-stream",
        }
        response = self._http.put(f"/v1/uploads/{_seg(upload.id)}", content=body(), headers=headers)
        if response.status_code >= 400:
            raise self._error(response)
        return int(Upload.model_validate_json(response.content).offset)

    def _upload_offset(self, upload_id: str) -> int:
        return self._parse(Upload, "GET", f"/v1/uploads/{_seg(upload_id)}").offset

    def _complete_upload(self, upload_id: str, sha256: str) -> FileInfo:
        """POST .../complete, retried (it is idempotent) while the server still verifies the bytes (409 not_ready)."""
        path = f"/v1/uploads/{_seg(upload_id)}/complete"
        for attempt in itertools.count():
            try:
                return self._parse(FileInfo, "POST", path, json_body={"sha256": sha256})
            except NotReadyError:
                if attempt >= self.retry.attempts * 20:
                    raise
                self._sleep(self.retry.delay(min(attempt, 5)))
        raise AssertionError("unreachable")

    def get_file(self, file_id: str) -> FileInfo:
        return self._parse(FileInfo, "GET", f"/v1/files/{_seg(file_id)}")

    def list_files(self, limit: int | None = None, cursor: str | None = None) -> FileList:
        """One page of GET /v1/files: your files, newest first, with when each expires and whether a job uses it."""
        return self._parse(FileList, "GET", "/v1/files", params={"limit": limit, "cursor": cursor})

    def iter_files(self, page_size: int = 50) -> Iterator[FileInfo]:
        """All your files (newest first), following next_cursor."""
        cursor: str | None = None
        while True:
            page = self.list_files(limit=page_size, cursor=cursor)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    def delete_file(self, file_id: str) -> None:
        """DELETE /v1/files/{id}; ConflictError while a queued or running job uses the file."""
        self._send("DELETE", f"/v1/files/{_seg(file_id)}", idempotent=True).close()

    # ---------------------------------------------------------------- jobs

    def submit_job(
        self,
        spec: Mapping[str, Any],
        model_file_id: str,
        data_file_id: str | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        webhook_events: Sequence[str] | None = None,
    ) -> Job:
        """POST /v1/jobs (JSON); the Idempotency-Key makes retries return the same job instead of a second one."""
        body: dict[str, Any] = {
            "spec": dict(spec),
            "model_file_id": model_file_id,
            "data_file_id": data_file_id,
            "webhook_url": webhook_url,
        }
        if metadata:  # only when given: a server from before metadata refuses unknown fields
            body["metadata"] = dict(metadata)
        if webhook_events is not None:  # likewise for the webhook event filter
            body["webhook_events"] = list(webhook_events)
        key = idempotency_key or new_idempotency_key()
        return self._parse(Job, "POST", "/v1/jobs", json_body=body, headers={"Idempotency-Key": key})

    def submit_job_multipart(
        self,
        spec: Mapping[str, Any] | str,
        model: str | Path,
        data: str | Path | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Job:
        """POST /v1/jobs as multipart with the model (and data) files in the same request."""
        spec_text = spec if isinstance(spec, str) else json.dumps(dict(spec))
        form: dict[str, str] = {"spec": spec_text}
        if webhook_url:
            form["webhook_url"] = webhook_url
        if metadata:
            form["metadata"] = json.dumps(dict(metadata))
        model_path, data_path = Path(model), Path(data) if data is not None else None

        def files(stack: contextlib.ExitStack) -> Mapping[str, Any]:
            parts: dict[str, Any] = {"model": (model_path.name, stack.enter_context(model_path.open("rb")))}
            if data_path is not None:
                parts["data"] = (data_path.name, stack.enter_context(data_path.open("rb")))
            return parts

        key = idempotency_key or new_idempotency_key()
        return self._parse(Job, "POST", "/v1/jobs", data=form, files=files, headers={"Idempotency-Key": key})

    def get_job(self, job_id: str) -> Job:
        return self._get_job(job_id)

    def _get_job(self, job_id: str, attempts: int | None = None) -> Job:
        return self._parse(Job, "GET", f"/v1/jobs/{_seg(job_id)}", attempts=attempts)

    def list_jobs(
        self,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        kind: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> JobList:
        """One page of GET /v1/jobs: jobs in any of `status`, of `kind`, carrying every `metadata` pair."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        params = {
            "status": statuses or None,
            "kind": kind,
            "meta": [f"{k}:{v}" for k, v in (metadata or {}).items()] or None,
            "limit": limit,
            "cursor": cursor,
        }
        return self._parse(JobList, "GET", "/v1/jobs", params=params)

    def iter_jobs(
        self,
        status: str | Sequence[str] | None = None,
        page_size: int = 50,
        kind: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[Job]:
        """All matching jobs (newest first), following next_cursor."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status=status, limit=page_size, cursor=cursor, kind=kind, metadata=metadata)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    def cancel_job(self, job_id: str) -> Job:
        """POST /v1/jobs/{id}/cancel; asking twice is harmless, so it is retried like a read."""
        return self._parse(Job, "POST", f"/v1/jobs/{_seg(job_id)}/cancel")

    def delete_job(self, job_id: str) -> None:
        """DELETE /v1/jobs/{id}: a finished job with its artifact and report (409 while it is queued or running)."""
        self._send("DELETE", f"/v1/jobs/{_seg(job_id)}", idempotent=True).close()

    def events(self, job_id: str, after: int | None = None) -> EventList:
        return self._events(job_id, after)

    def _events(self, job_id: str, after: int | None, attempts: int | None = None) -> EventList:
        path = f"/v1/jobs/{_seg(job_id)}/events"
        return self._parse(EventList, "GET", path, params={"after": after}, attempts=attempts)

    def follow_events(
        self, job_id: str, after: int | None = None, max_outage: float = 300.0, poll_interval: float = 2.0
    ) -> Iterator[Event]:
        """The job's events as they happen (SSE) until it has ended; a dropped stream resumes after the last event.

        Raises UnreachableError or ServerError once the server has been away for longer than `max_outage` seconds.
        """
        last, outage_since, attempt = after, None, 0
        while True:
            try:
                with contextlib.closing(self._open_events(job_id, last)) as response:
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        response.read()  # a server without live events: fall back to polling its list
                        yield from self._poll_events(job_id, last, poll_interval)
                        return
                    for frame in frames(response.iter_lines()):
                        outage_since, attempt = None, 0
                        if frame.event == "end":
                            return
                        event = _event_of(frame)
                        last = event.seq
                        yield event
            except httpx.TransportError as exc:  # dropped mid-stream
                if outage_since is not None and time.monotonic() - outage_since > max_outage:
                    raise UnreachableError(f"lost the events of {job_id} from {self.base_url}: {exc}") from exc
            except (UnreachableError, ServerError, RateLimitedError):
                if outage_since is not None and time.monotonic() - outage_since > max_outage:
                    raise
            # The stream broke (or closed before its `end` frame): reconnect with Last-Event-ID.
            outage_since = outage_since or time.monotonic()
            self._sleep(self.retry.delay(attempt))
            attempt += 1

    def _open_events(self, job_id: str, last: int | None) -> httpx.Response:
        headers = {"Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        path = f"/v1/jobs/{_seg(job_id)}/events"
        return self._send("GET", path, idempotent=True, headers=headers, stream=True, attempts=1)

    def _poll_events(self, job_id: str, after: int | None, poll_interval: float) -> Iterator[Event]:
        while True:
            job = self.get_job(job_id)  # before the events: once it has ended, this page holds its last ones
            page = self._events(job_id, after)
            yield from page.items
            after = page.next_after
            if page.next_cursor is None and job.terminal:
                return
            if page.next_cursor is None:
                self._sleep(poll_interval)

    def webhook_deliveries(
        self, job_id: str, cursor: str | None = None, limit: int | None = None
    ) -> WebhookDeliveryList:
        """One page of the job's webhook delivery log (oldest attempt first)."""
        path = f"/v1/jobs/{_seg(job_id)}/webhook-deliveries"
        return self._parse(WebhookDeliveryList, "GET", path, params={"cursor": cursor, "limit": limit})

    def redeliver_webhook(self, job_id: str) -> WebhookRedelivery:
        """Queue the job's webhook again; not retried after a lost answer (that could send it twice)."""
        path = f"/v1/jobs/{_seg(job_id)}/webhook-deliveries/redeliver"
        return self._parse(WebhookRedelivery, "POST", path, idempotent=False)

    def get_report(self, job_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/v1/jobs/{_seg(job_id)}/report"))

    def get_report_html(self, job_id: str) -> str:
        response = self._send(
            "GET", f"/v1/jobs/{_seg(job_id)}/report.html", idempotent=True, headers={"Accept": "text/html"}
        )
        return response.text

    # ---------------------------------------------------------------- waiting

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        max_outage: float = 300.0,
        on_update: Callable[[Job], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_retry: Callable[[Exception, float], None] | None = None,
    ) -> Job:
        """Poll until the job is terminal; rides out server restarts and 5xx for up to `max_outage` seconds.

        Raises WaitTimeoutError after `timeout` seconds (None waits for ever), UnreachableError or ServerError
        when the outage lasts longer than `max_outage`, and AuthError/NotFoundError at once.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        outage_since: float | None = None
        outage_attempt = 0
        last: Job | None = None
        after: int | None = None
        while True:
            try:
                # One attempt per poll: this loop owns the outage policy, so `max_outage` bounds it exactly and
                # every failed poll reaches `on_retry` instead of being absorbed by the request-level retries.
                job = self._get_job(job_id, attempts=1)
                if on_event is not None:
                    after = self._drain_events(job_id, after, on_event)
            except (UnreachableError, ServerError, RateLimitedError) as exc:
                now = time.monotonic()
                outage_since = outage_since or now
                if now - outage_since > max_outage:
                    raise
                delay = self.retry.delay(outage_attempt)
                outage_attempt += 1
                if on_retry is not None:
                    on_retry(exc, delay)
            else:
                outage_since, outage_attempt = None, 0
                last = job
                if on_update is not None:
                    on_update(job)
                if job.terminal:
                    return job
                delay = poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeoutError(f"job {job_id} did not finish within {timeout:g} s", last)
                delay = min(delay, left)
            self._sleep(delay)

    def _drain_events(self, job_id: str, after: int | None, on_event: Callable[[Event], None]) -> int | None:
        # Events are a nicety for logs: a server without them, or a hiccup, must not stop the wait.
        try:
            page = self._events(job_id, after, attempts=1)
        except AuthError:
            raise
        except PrunekitError:
            return after
        for event in page.items:
            on_event(event)
        return page.next_after

    # ---------------------------------------------------------------- downloads

    def download_artifact(
        self,
        job_id: str,
        out_dir: str | Path = ".",
        job: Job | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> DownloadResult:
        """Download the job's artifact into out_dir, resuming a `.part` file with Range, verified by sha256."""
        job = job or self.get_job(job_id)
        artifact = job.artifact
        if artifact is None:
            raise NotReadyError(409, "not_ready", "Not ready", f"job {job_id} has no artifact (status {job.status})")
        expected = artifact.sha256.lower()
        total = artifact.size
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        final = out / _safe_name(artifact.name or f"{job_id}.bin")
        part = final.with_name(final.name + ".part")
        if final.exists() and _sha256(final) == expected:
            return DownloadResult(final, expected, final.stat().st_size, skipped=True)

        resumed = False
        fresh_tries = 0
        for attempt in range(self.retry.attempts * 2):
            offset = part.stat().st_size if part.exists() else 0
            if total and offset > total:
                part.unlink()
                offset = 0
            if not (total and offset == total):
                try:
                    offset, was_resumed = self._fetch_into(job_id, part, offset, expected, total, on_progress)
                    resumed = resumed or was_resumed
                except (httpx.TransportError, UnreachableError, ServerError):
                    # Keep the .part: the next try asks only for the missing bytes.
                    if attempt >= self.retry.attempts * 2 - 1:
                        raise
                    self._sleep(self.retry.delay(min(attempt, 5)))
                    continue
                if total and offset < total:
                    continue  # the body ended early; resume
            digest = _sha256(part)
            if digest == expected:
                part.replace(final)
                return DownloadResult(final, expected, final.stat().st_size, resumed=resumed)
            part.unlink()
            # A stale .part from another artifact can poison a resume; one clean download settles it.
            fresh_tries += 1
            if fresh_tries > 1 or not resumed:
                raise IntegrityError(f"artifact of {job_id}: sha256 {digest} does not match the server's {expected}")
            resumed = False
        raise UnreachableError(f"could not download the artifact of {job_id} from {self.base_url}")

    def _fetch_into(
        self,
        job_id: str,
        part: Path,
        offset: int,
        etag: str,
        total: int,
        on_progress: Callable[[int, int], None] | None,
    ) -> tuple[int, bool]:
        """One GET of the artifact appended to `part` from `offset`; returns (bytes now in part, resumed?)."""
        headers = {"Accept": "*/*"}
        if offset:
            # If-Range: when the artifact changed, the server sends it whole (200) instead of a wrong tail.
            headers.update({"Range": f"bytes={offset}-", "If-Range": f'"{etag}"'})
        try:
            response = self._send(
                "GET", f"/v1/jobs/{_seg(job_id)}/artifact", idempotent=True, headers=headers, stream=True
            )
        except ApiError as exc:
            if exc.status == 416:  # our .part is longer than the artifact: start over
                part.unlink(missing_ok=True)
                return 0, False
            raise
        with contextlib.closing(response):
            resumed = False
            if response.status_code == 206:
                if not offset or _range_start(response) != offset:
                    part.unlink(missing_ok=True)  # a range we did not ask for: start clean
                    return 0, False
                mode, resumed = "ab", True
            else:
                mode, offset = "wb", 0  # 200: the server sent the whole file (Range ignored or If-Range failed)
            with part.open(mode) as fh:
                for chunk in response.iter_bytes(_CHUNK):
                    fh.write(chunk)
                    offset += len(chunk)
                    if on_progress is not None:
                        on_progress(offset, total)
        return offset, resumed


class _ProgressReader:
    """A file handle that reports how much of it has been read (httpx streams multipart files with `read`)."""

    def __init__(self, fh: IO[bytes], total: int, on_progress: ProgressCallback) -> None:
        self._fh, self._total, self._on_progress = fh, total, on_progress
        self.name = fh.name

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._on_progress(self._fh.tell(), self._total)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


def _event_of(frame: Frame) -> Event:
    try:
        return Event.model_validate_json(frame.data)
    except pydantic.ValidationError as exc:
        raise ServerError(200, "bad_response", "unexpected event in the stream", str(exc)) from exc


def new_idempotency_key() -> str:
    return f"pk-{uuid.uuid4().hex}"


def _seg(value: str) -> str:
    return quote(value, safe="")


def _safe_name(name: str) -> str:
    # The name comes from the server: never let it climb out of the output directory.
    base = Path(name.replace("\\", "/")).name
    return base if base not in ("", ".", "..") else "artifact.bin"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _range_start(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Range", "")
    # "bytes 100-199/200"
    with contextlib.suppress(ValueError, IndexError):
        return int(value.split()[1].split("-")[0])
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prunekit")
    except PackageNotFoundError:
        return "0"
