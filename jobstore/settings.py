"""All settings of the service and the workers, read once from `PRUNEKIT_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# An API key's name is stored as the owner of its jobs and files (the `owner` columns are String(64)).
OWNER_MAX_LENGTH = 64


def parse_api_keys(text: str) -> dict[str, str]:
    """Map of key name to the raw key from 'name:key,name2:key2'; errors never quote the text (it holds keys)."""
    out: dict[str, str] = {}
    for n, item in enumerate((i.strip() for i in text.split(",")), start=1):
        if not item:
            continue
        name, sep, key = item.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise ValueError("PRUNEKIT_API_KEYS must look like 'name:key,name2:key2'")
        if len(name) > OWNER_MAX_LENGTH:
            raise ValueError(
                f"PRUNEKIT_API_KEYS entry {n}: the key name is {len(name)} characters long; names are at most "
                f"{OWNER_MAX_LENGTH} (a name is stored as the owner of the key's jobs and files)"
            )
        out[name] = key
    return out


class Settings(BaseSettings):
    """Defaults are the embedded single-machine setup: SQLite, filesystem broker, local storage."""

    # Settings hold secrets (API keys, the webhook secret, database passwords): errors never echo the input.
    model_config = SettingsConfigDict(env_prefix="PRUNEKIT_", extra="ignore", hide_input_in_errors=True)

    # Database: SQLite by default, PostgreSQL with postgresql+psycopg://...
    database_url: str = "sqlite:///./var/prunekit.db"
    migrate_on_start: bool = True

    # Broker: "filesystem://" (embedded) or redis://host:6379/0
    broker_url: str = "filesystem://"
    broker_dir: Path = Path("./var/broker")
    broker_key_prefix: str = Field(
        default="", description="Prefix of every Redis key (isolates deployments on one Redis)."
    )

    # Storage
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path = Path("./var/storage")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_create_bucket: bool = False
    s3_part_size: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)

    # Uploads
    # 20 GiB: a 7B-parameter model in bf16 (~14 GB) with its tokenizer and config, with room to spare.
    max_upload_bytes: int = Field(default=20 * 1024**3, ge=1, description="Largest file one upload may store.")
    upload_chunk_bytes: int = Field(
        default=32 * 1024**2,
        ge=1,
        description="Bytes per chunk of a resumable upload (/v1/uploads); on S3 at least 5 MiB (a multipart part).",
    )
    max_form_field_bytes: int = Field(default=1024 * 1024, ge=1)

    # Quotas: per API key; submit and upload answer 429 with Retry-After beyond them
    max_active_jobs_per_key: int = Field(default=20, ge=1, description="Queued plus running jobs of one key.")
    max_stored_bytes_per_key: int = Field(
        default=200 * 1024**3, ge=1, description="Bytes of one key's uploaded files and job artifacts."
    )
    quota_retry_after: int = Field(
        default=10, ge=1, description="Seconds a client over its quota is told to wait (Retry-After)."
    )
    max_finetune_epochs: int = Field(
        default=1000, ge=0, description="Most epochs a spec may ask for (finetune.epochs, finetune.regularize_epochs)."
    )
    max_sweep_trials: int = Field(default=200, ge=1, description="Most trials of one sweep (grid points x seeds).")
    file_ttl_seconds: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Uploaded files are removed this long after their upload, unless a queued or running job uses "
        "them.",
    )

    # Status reads (GET /v1/jobs/{id}): cached per API process on PostgreSQL, dropped on the job's change notification
    status_cache: bool = Field(
        default=True, description="Cache status bodies per API process (PostgreSQL only; see jobstore/job_changes.py)."
    )
    status_cache_ttl: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a cached status body lives at most: the bound on staleness should a change notification "
        "be lost (normally a change reaches every API process within milliseconds).",
    )

    # Auth: "name:key,name2:key2"
    api_keys: SecretStr | None = None
    auth_disabled: bool = False
    ui_session_hours: float = Field(
        default=12.0, gt=0, description="How long a browser stays signed in to the jobs page after entering a key."
    )

    # Jobs and workers
    default_queue: Literal["cpu", "gpu"] = "cpu"
    sandbox_memory_bytes: int = Field(
        default=8 * 1024**3,
        ge=64 * 1024**2,
        description="Memory a job's sandboxed child may map on top of the interpreter and torch (RLIMIT_AS; "
        "not applied to CUDA jobs).",
    )
    job_soft_time_limit: int = Field(default=6 * 3600, ge=1, description="Seconds before a job is stopped and failed.")
    job_time_limit: int = Field(default=6 * 3600 + 300, ge=1, description="Hard limit: the worker process is killed.")
    max_attempts: int = Field(default=3, ge=1, description="Deliveries of one job (crashes included) before it fails.")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="A running job whose lease is this old is presumed lost."
    )
    heartbeat_seconds: float = Field(
        default=1.0, gt=0, description="How often a running job renews its lease and polls cancel."
    )
    sweep_interval: float = Field(default=5.0, gt=0, description="How often workers look for lost jobs to requeue.")
    requeue_stale_after: float = Field(
        default=120.0,
        gt=0,
        description="A job queued this many seconds since it was sent, whose message the broker no longer holds "
        "(restarted without persistence, flushed), is sent again; pending webhooks likewise.",
    )
    progress_interval: float = Field(
        default=0.5, ge=0, description="Least seconds between two progress writes of one job."
    )
    events_poll_interval: float = Field(
        default=1.0, gt=0, description="How often a live event stream (SSE) looks for new events of its job."
    )
    events_keepalive: float = Field(
        default=15.0, gt=0, description="Seconds of silence after which a live event stream sends a keep-alive."
    )
    engine_isolate: bool = True
    worker_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of each job's torch (set in its sandbox before torch loads); default: the cores "
        "available to the worker less one, divided by its concurrency (-c), at least 1.",
    )
    work_dir: Path | None = None
    sandbox_stale_after: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after which a prunekit-sandbox-* temp folder whose process is gone is removed "
        "(default: the hard job time limit plus 10 minutes).",
    )
    upload_part_stale_after: float = Field(
        default=3600.0, gt=0, description="Seconds after which a partial upload (.tmp/*.part) is removed."
    )

    # Webhooks
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Master secret ('whsec_<base64>') from which each API key's own webhook secret is derived.",
    )
    webhook_rotation_grace: float = Field(
        default=86400.0, ge=0, description="Seconds after a rotation during which the previous secret also signs."
    )
    webhook_timestamp_tolerance: int = Field(default=300, ge=1, description="Seconds a receiver accepts.")
    webhook_timeout: float = 5.0
    webhook_max_attempts: int = Field(default=6, ge=1)
    webhook_backoff_seconds: float = Field(default=2.0, gt=0)

    # Embedded server
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, v: SecretStr | None) -> SecretStr | None:
        # Checked when the settings load (service start-up), not on the first request a bad entry would break.
        if v is not None:
            parse_api_keys(v.get_secret_value())
        return v

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return [h.strip().lower() for h in v.split(",") if h.strip()]
        return v

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        if self.job_time_limit <= self.job_soft_time_limit:
            raise ValueError("job_time_limit must be larger than job_soft_time_limit")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("s3_bucket is required when storage_backend is 's3'")
        return self

    @property
    def broker_is_filesystem(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def visibility_timeout(self) -> int:
        """Redis redelivers unacked messages after this; it must exceed the longest allowed job."""
        return self.job_time_limit + 600

    def parsed_api_keys(self) -> dict[str, str]:
        """Map of key name to the raw key, from `api_keys`."""
        return {} if self.api_keys is None else parse_api_keys(self.api_keys.get_secret_value())
