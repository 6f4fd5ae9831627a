"""The closed value sets of prunekit.spec.api cover every value the engine and the job store produce."""

from __future__ import annotations

from typing import get_args

import pytest

from jobstore.db import Base
from prunekit.spec.api import ErrorCode, EventKind, GateStatus, JobStatus, Stage, TrialStatus, WebhookEventType
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
        ("jobs", "gate_status"): GateStatus,
    }
    for (table, column), enum_cls in columns.items():
        col = Base.metadata.tables[table].c[column]
        assert getattr(col.type, "enum_class", None) is enum_cls, f"{table}.{column}"
        assert col.type.length >= max(len(v.value) for v in enum_cls)  # type: ignore[attr-defined]


def test_every_report_status_is_a_gate_status_with_an_exit_code() -> None:
    from prunekit.cli.local import _REPORT_EXIT
    from prunekit.spec.report import ReportStatus

    assert set(get_args(ReportStatus)) == {g.value for g in GateStatus} == set(_REPORT_EXIT)
    assert len(set(_REPORT_EXIT.values())) == len(_REPORT_EXIT)  # each outcome its own code


@pytest.mark.parametrize(
    ("gate", "extra"),
    [
        (GateStatus.PASSED, set()),
        (GateStatus.GATE_MISSED, {WebhookEventType.JOB_GATE_MISSED}),
        (GateStatus.INCONCLUSIVE, {WebhookEventType.JOB_GATE_INCONCLUSIVE}),
    ],
)
def test_a_successs_gate_status_picks_its_webhook_event(gate: GateStatus, extra: set[WebhookEventType]) -> None:
    from jobstore.models import JobRecord
    from jobstore.webhooks.events import event_types

    job = JobRecord(status=JobStatus.SUCCEEDED, gate_status=gate)
    assert event_types(job) == {"job.succeeded", *(e.value for e in extra)}
