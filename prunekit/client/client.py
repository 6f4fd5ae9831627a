"""A small httpx client for the prunekit HTTP API (docs/design/api-contract.md), light enough for CI images."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar, cast
from urllib.parse import quote

import httpx
import pydantic

from prunekit.client.errors import (
    ApiError,
    AuthError,
    IntegrityError,
    NotReadyError,
    PrunekitError,
    RateLimitedError,
    ServerError,
    UnreachableError,
    WaitTimeoutError,
    error_from_problem,
)
from prunekit.client.types import FileInfo
from prunekit.spec.api import Event, EventList, Job, JobList

ENV_SERVER = "PRUNEKIT_SERVER"
ENV_API_KEY = "PRUNEKIT_API_KEY"
DEFAULT_SERVER = "http://127.0.0.1:8000"
_CHUNK = 1 << 16

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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
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

    def _parse(self, model: type[_Body], method: str, path: str, **kwargs: Any) -> _Body:
        """Send a request that is safe to repeat, and read the answer as one of the models of prunekit/spec/api.py."""
        response = self._send(method, path, idempotent=True, **kwargs)
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

    def upload_file(self, path: str | Path, kind: str | None = None) -> FileInfo:
        """Stream a file to POST /v1/files; repeating it after a lost answer only leaves an unused file."""
        p = Path(path)

        def files(stack: contextlib.ExitStack) -> Mapping[str, Any]:
            handle: IO[bytes] = stack.enter_context(p.open("rb"))
            return {"file": (p.name, handle, "application/octet-stream")}

        return cast(FileInfo, self._json("POST", "/v1/files", data={"kind": kind} if kind else None, files=files))

    def get_file(self, file_id: str) -> FileInfo:
        return cast(FileInfo, self._json("GET", f"/v1/files/{_seg(file_id)}"))

    # ---------------------------------------------------------------- jobs

    def submit_job(
        self,
        spec: Mapping[str, Any],
        model_file_id: str,
        data_file_id: str | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """POST /v1/jobs (JSON); the Idempotency-Key makes retries return the same job instead of a second one."""
        body = {
            "spec": dict(spec),
            "model_file_id": model_file_id,
            "data_file_id": data_file_id,
            "webhook_url": webhook_url,
        }
        key = idempotency_key or new_idempotency_key()
        return self._parse(Job, "POST", "/v1/jobs", json_body=body, headers={"Idempotency-Key": key})

    def submit_job_multipart(
        self,
        spec: Mapping[str, Any] | str,
        model: str | Path,
        data: str | Path | None = None,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """POST /v1/jobs as multipart with the model (and data) files in the same request."""
        spec_text = spec if isinstance(spec, str) else json.dumps(dict(spec))
        form: dict[str, str] = {"spec": spec_text}
        if webhook_url:
            form["webhook_url"] = webhook_url
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

    def list_jobs(self, status: str | None = None, limit: int | None = None, cursor: str | None = None) -> JobList:
        """One page of GET /v1/jobs; `status` is a JobStatus (or its value)."""
        return self._parse(JobList, "GET", "/v1/jobs", params={"status": status, "limit": limit, "cursor": cursor})

    def iter_jobs(self, status: str | None = None, page_size: int = 50) -> Iterator[Job]:
        """All jobs (newest first), following next_cursor."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(status=status, limit=page_size, cursor=cursor)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    def cancel_job(self, job_id: str) -> Job:
        """POST /v1/jobs/{id}/cancel; asking twice is harmless, so it is retried like a read."""
        return self._parse(Job, "POST", f"/v1/jobs/{_seg(job_id)}/cancel")

    def delete_job(self, job_id: str) -> None:
        self._send("DELETE", f"/v1/jobs/{_seg(job_id)}", idempotent=True).close()

    def events(self, job_id: str, after: int | None = None) -> EventList:
        return self._events(job_id, after)

    def _events(self, job_id: str, after: int | None, attempts: int | None = None) -> EventList:
        path = f"/v1/jobs/{_seg(job_id)}/events"
        return self._parse(EventList, "GET", path, params={"after": after}, attempts=attempts)

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
