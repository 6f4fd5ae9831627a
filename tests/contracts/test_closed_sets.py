"""The closed value sets of prunekit.spec.api cover every value the engine and the job store produce."""

from __future__ import annotations

import pytest

from jobstore.db import Base
from prunekit.spec.api import ErrorCode, EventKind, JobStatus, Stage, TrialStatus
from worker.engine.errors import ERRORS_BY_CODE
from worker.engine.kinds import KINDS


def test_every_engine_error_code_is_an_error_code() -> None:
    assert set(ERRORS_BY_CODE) <= {c.value for c in ErrorCode}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_stage_of_every_kind_is_a_stage(kind: str) -> None:
    _, weights = KINDS[kind]
    assert set(weights) <= {s.value for s in Stage}


def test_the_status_columns_hold_the_enums() -> None:
    import jobstore.models  # noqa: F401  (registers the tables)

    columns = {
        ("jobs", "status"): JobStatus,
        ("job_trials", "status"): TrialStatus,
        ("job_events", "kind"): EventKind,
    }
    for (table, column), enum_cls in columns.items():
        col = Base.metadata.tables[table].c[column]
        assert getattr(col.type, "enum_class", None) is enum_cls, f"{table}.{column}"
        assert col.type.length >= max(len(v.value) for v in enum_cls)  # type: ignore[attr-defined]
