"""The API's view of stored rows (prunekit.spec.api models), shared by the API and the webhooks."""

from __future__ import annotations

from jobstore.models import JobEvent, JobRecord
from prunekit.spec.api import Artifact, Event, Job, JobError, JobLinks, JobStatus, job_links


def links_of(job: JobRecord) -> JobLinks:
    succeeded = job.status == JobStatus.SUCCEEDED
    return job_links(job.id, succeeded and job.artifact_key is not None, succeeded and job.report_key is not None)


def job_view(job: JobRecord) -> Job:
    """The Job body of a stored job."""
    links = links_of(job)
    artifact = None
    if links.artifact is not None:
        artifact = Artifact(name=job.artifact_name or "", size=job.artifact_size or 0, sha256=job.artifact_sha256 or "")
    return Job.model_validate(
        {
            "id": job.id,
            "status": job.status,
            "stage": job.stage,
            "percent": job.percent,
            "kind": job.kind,
            "queue": job.queue,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "updated_at": job.updated_at,
            "attempts": job.attempts,
            "error": JobError.model_validate({"code": job.error_code, "message": job.error_message or ""})
            if job.error_code
            else None,
            "gate_status": job.gate_status,
            "gates": job.gates or [],
            "model_file_id": job.model_file_id,
            "data_file_id": job.data_file_id,
            "spec": job.spec,
            "artifact": artifact,
            "links": links,
            "metadata": {row.key: row.value for row in job.meta_rows},
        }
    )


def event_view(ev: JobEvent) -> Event:
    """The Event body of a stored event."""
    return Event.model_validate(
        {
            "seq": ev.seq,
            "ts": ev.ts,
            "kind": ev.kind,
            "stage": ev.stage,
            "percent": ev.percent,
            "message": ev.message,
            "data": ev.data or {},
        }
    )
