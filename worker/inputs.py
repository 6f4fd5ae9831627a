"""A job's input files, fetched from storage into the job's work folder."""

from __future__ import annotations

import re
from pathlib import Path

from jobstore.models import JobRecord
from jobstore.repositories import files as files_repo
from jobstore.storage import ObjectMissing
from worker.context import WorkerContext

_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,12}$")


def _suffix(name: str) -> str:
    """A harmless extension from the user's file name for the local temp copy (keys never use it)."""
    suffix = Path(name).suffix
    return suffix.lower() if _SAFE_SUFFIX.match(suffix) else ""


def download_inputs(ctx: WorkerContext, job: JobRecord, folder: Path) -> tuple[Path, Path | None]:
    """Fetch the job's model (and dataset) from storage into `folder`."""
    with ctx.db.session() as s:
        model_rec = files_repo.get_file_any(s, job.model_file_id)
        data_rec = files_repo.get_file_any(s, job.data_file_id) if job.data_file_id else None
    if model_rec is None or (job.data_file_id and data_rec is None):
        raise ObjectMissing("an input file of this job was deleted")
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"model{_suffix(model_rec.name)}"
    ctx.storage.get_file(model_rec.storage_key, model_path)
    data_path = None
    if data_rec is not None:
        data_path = folder / f"data{_suffix(data_rec.name)}"
        ctx.storage.get_file(data_rec.storage_key, data_path)
    return model_path, data_path


class LazyInputs:
    """The job's input files, downloaded once per task and only when first needed (a trial was claimed)."""

    def __init__(
        self, ctx: WorkerContext, job: JobRecord, folder: Path, ready: tuple[Path, Path | None] | None = None
    ) -> None:
        self.ctx, self.job, self.folder, self._paths = ctx, job, folder, ready

    def get(self) -> tuple[Path, Path | None]:
        if self._paths is None:
            self._paths = download_inputs(self.ctx, self.job, self.folder)
        return self._paths
