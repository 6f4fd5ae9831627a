"""A sweep job with `seeds: 3` through the real service (uvicorn, a Celery worker, Redis, PostgreSQL, S3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prunekit.spec.report import Trial
from tests.integration.conftest import Stack
from worker.engine.analysis.aggregate import aggregate_points
from worker.engine.analysis.recommend import recommend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC: dict[str, Any] = {
    "kind": "sweep",
    "pruning": {"method": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 1, "batch_size": 64},
    "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
    "seed": 4,
    "sweep": {"sparsities": [0.5, 0.95], "seeds": 3},
}


def test_seeded_sweep_reports_points_and_a_recommendation_matching_its_trials(
    live_server: Stack,
    torchscript_model: Path,
    digits_npz: Path,
) -> None:
    with live_server.client() as c:
        files = {
            "model": (torchscript_model.name, torchscript_model.read_bytes()),
            "data": (digits_npz.name, digits_npz.read_bytes()),
        }
        r = c.post("/v1/jobs", files=files, data={"spec": json.dumps(SPEC)})
        assert r.status_code == 202, r.text
        done = live_server.wait(r.json()["id"], timeout=300)
        assert done["status"] == "succeeded", done
        report = c.get(done["links"]["report"]).json()
        page = c.get(done["links"]["report_html"]).text

    names = [t["name"] for t in report["trials"]]
    assert names == [f"s{sp}-none-oneshot-seed{seed}" for sp in ("0.5", "0.95") for seed in (4, 5, 6)]
    points = report["sweep_points"]
    assert [(p["name"], p["n"], p["trials"]) for p in points] == [
        ("s0.5-none-oneshot", 3, names[:3]),
        ("s0.95-none-oneshot", 3, names[3:]),
    ]
    for p in points:
        for metric in ("val_accuracy", "train_accuracy", "val_loss", "train_loss", "gap"):
            stat = p[metric]
            assert stat["n"] == 3 and stat["low"] <= stat["mean"] <= stat["high"], (p["name"], metric, stat)

    # The recommendation is the one the trial table gives, and the reader is told it.
    expected = recommend(aggregate_points([Trial.model_validate(t) for t in report["trials"]]))
    assert expected is not None
    assert report["sweep_recommendation"] == expected.model_dump(mode="json")
    assert expected.verdict in {"clear_winner", "within_noise"}
    assert expected.message in report["notes"]
    assert 'id="sweep-recommendation"' in page and 'id="plot-sweep-accuracy"' in page and 'id="plot-sweep-gap"' in page
