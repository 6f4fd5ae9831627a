"""Per-layer sensitivity: prune each layer alone at a ladder of sparsities, measure the accuracy drop.

The recommendation spreads a global target over layers by a common tolerance: each layer gets the highest
sparsity whose drop stays under it, and the tolerance is bisected until the parameter-weighted mean meets
the target. Its `overrides` can be pasted into a compress spec's `pruning.overrides`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from prunekit.spec import JobSpec, MagnitudePruning, MaskPruningSpec
from prunekit.spec.report import PhaseMetrics, Report
from worker.engine.data import load_dataset
from worker.engine.errors import UnsupportedError
from worker.engine.evaluation.metrics import predict_logits, split_metrics
from worker.engine.models.loading import load_model
from worker.engine.pipeline import require_data
from worker.engine.progress import StageProgress
from worker.engine.pruning import PruneTarget, compute_masks, select_targets


def _val_accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    acc = split_metrics(predict_logits(module, x, batch_size, torch.device("cpu")), y).accuracy
    return float(acc or 0.0)


def _layer_drops(
    module: torch.nn.Module, target: PruneTarget, levels: list[float], base_acc: float, ev: Any
) -> list[float]:
    original = target.param.detach().clone()
    cfg = MagnitudePruning(scope="layerwise", include=[target.name], prune_classifier=True, prune_normalization=True)
    drops = []
    for level in levels:
        masks = compute_masks([dataclasses.replace(target, sparsity=level)], cfg)
        masks.apply(module)
        drops.append(base_acc - ev(module))
        with torch.no_grad():
            target.param.copy_(original)
    return drops


def _max_level_under(drops: list[float], levels: list[float], tolerance: float) -> float:
    ok = [lv for lv, d in zip(levels, drops, strict=True) if d <= tolerance]
    return max(ok, default=0.0)


def recommend(layers: list[dict[str, Any]], levels: list[float], target: float) -> dict[str, Any]:
    """Per-layer sparsities whose parameter-weighted mean reaches `target` with the smallest common tolerance."""
    total = sum(layer["params"] for layer in layers)

    def achieved(tol: float) -> tuple[float, dict[str, float]]:
        chosen = {layer["name"]: _max_level_under(layer["drops"], levels, tol) for layer in layers}
        return sum(chosen[layer["name"]] * layer["params"] for layer in layers) / total, chosen

    lo, hi = -1.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if achieved(mid)[0] >= target:
            hi = mid
        else:
            lo = mid
    mean, overrides = achieved(hi)
    return {
        "target": target,
        "achieved": mean,
        "tolerance": hi,
        "overrides": overrides,
        "reachable": mean >= target - 1e-9,
    }


def run_sensitivity(
    spec: JobSpec, model_path: Path, data_path: Path | None, out_dir: Path, progress: StageProgress
) -> Report:
    """Measure per-layer sensitivity; the report carries the table and a recommendation, no artifact."""
    assert spec.sensitivity is not None
    if not isinstance(spec.pruning, MaskPruningSpec):
        raise UnsupportedError("sensitivity analysis needs a mask pruning method to select layers")
    progress.update("load", 0.0, "loading")
    model = load_model(model_path, spec.model)
    model.set_train(False)
    data = require_data(load_dataset(data_path, spec.data) if data_path else None, "sensitivity")
    assert data.y_val is not None
    bs = spec.evaluation.batch_size

    def ev(m: torch.nn.Module) -> float:
        return _val_accuracy(m, data.x_val, data.y_val, bs)  # type: ignore[arg-type]

    base = ev(model.module)
    targets = select_targets(model.module, spec.pruning)[: spec.sensitivity.max_layers]
    levels = sorted(spec.sensitivity.levels)
    layers = []
    for i, target in enumerate(targets):
        progress.update("analyze", i / len(targets), f"layer {target.name}")
        drops = _layer_drops(model.module, target, levels, base, ev)
        layers.append({"name": target.name, "params": target.param.numel(), "drops": drops})
    result: dict[str, Any] = {"baseline_val_accuracy": base, "levels": levels, "layers": layers}
    goal = spec.sensitivity.target_sparsity if spec.sensitivity.target_sparsity is not None else spec.pruning.sparsity
    result["recommendation"] = recommend(layers, levels, goal)
    progress.update("report", 0.5, "writing report")
    report = _report(spec, model.format, result, base, data.split)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    return report


def _report(spec: JobSpec, fmt: str, result: dict[str, Any], base: float, split: str) -> Report:
    from prunekit.spec.report import SizeStats, SparsityStats, SplitMetrics
    from worker.engine.environment import describe_environment

    analysed = sum(layer["params"] for layer in result["layers"])
    size = SizeStats(params_total=analysed, params_nonzero=analysed)
    return Report(
        kind="sensitivity",
        spec=spec.model_dump(mode="json"),
        seed=spec.seed,
        input_format=fmt,
        output_format="none",
        data={"given": True, "split": split},
        notes=["analysis only: no model was produced; size figures cover the analysed layers only"],
        before=PhaseMetrics(val=SplitMetrics(accuracy=base)),
        sparsity=SparsityStats(global_sparsity=0.0, overall_sparsity=0.0),
        size_before=size,
        size_after=size,
        sensitivity=result,
        environment=describe_environment(torch.device("cpu"), False),
    )
