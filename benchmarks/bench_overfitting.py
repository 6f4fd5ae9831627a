"""Overfitting on purpose: does pruning narrow the train-validation gap, beyond what L2 or early stopping do?

Setting (options below): 15% of sklearn's digits for training with 20% of those labels flipped to another class,
the rest split into a clean validation set and a clean test set that nothing selects on. An MLP 64-512-512-10
(~300k weights for 270 samples) is trained dense with plain Adam until it memorises the noise.

Per seed (split, label noise, initialisation and batch order all follow the seed):
- dense: the overfit model above; the starting point of every pruning run and the distillation teacher.
- sweep: prune the dense model by global magnitude to each sparsity, oneshot or on the gradual (cubic) schedule,
  while fine-tuning with one regularizer: none, l2, l1, group_lasso or distill (from the dense model).
  Sparsity 0 is the same fine-tuning without pruning (the schedule does not apply there).
- baselines: dense models trained from scratch for dense + fine-tune epochs with l2, l1, group_lasso or dropout
  alone, and with early stopping on validation accuracy (which therefore selects on the validation set: compare
  it on the test split). Distillation has no dense baseline: its teacher is this dense model itself.

Pruning, fine-tuning, regularizers, distillation, schedules and metrics are prunekit's engine, driven in-process
(``worker.engine.training.phases.prune_and_recover``); only the data, the model and the statistics are here.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_overfitting.py [--workers 2] [--seeds 5] [--out-dir DIR]
Tune: OMP_NUM_THREADS=1 python benchmarks/bench_overfitting.py --tune   (regularizer strengths, on seed 100)
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import FinetuneSpec, MagnitudePruning
from worker.engine.data import Dataset
from worker.engine.evaluation.metrics import predict_logits, split_metrics
from worker.engine.models.handle import LoadedModel
from worker.engine.pruning import select_targets
from worker.engine.training.finetune import FinetuneResult
from worker.engine.training.phases import PhaseInputs, prune_and_recover

CPU = torch.device("cpu")
REGULARIZERS = ("none", "l2", "l1", "group_lasso", "distill")
SCHEDULES = ("oneshot", "gradual")
BASELINES = ("l2", "l1", "group_lasso", "dropout", "early_stopping")
METRICS = ("train_acc", "train_loss", "val_acc", "val_loss", "gap", "test_acc", "train_clean_acc", "noise_fit")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "overfitting"
TUNE_GRID = {"l2": (0.01, 0.02, 0.03, 0.05), "l1": (3e-4, 1e-3, 3e-3), "group_lasso": (1e-4, 3e-4, 1e-3)}
TUNE_DROPOUT = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class Setup:
    """Everything a run depends on besides its own point; pickled to the worker processes."""

    train_fraction: float = 0.15
    label_noise: float = 0.2
    test_fraction: float = 0.5  # of what is not training data; the rest is validation
    hidden: int = 512
    dense_epochs: int = 100
    finetune_epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    l2: float = 0.02
    l1: float = 1e-3
    group_lasso: float = 3e-4
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    dropout: float = 0.9
    patience: int = 10


@dataclass(frozen=True)
class Task:
    group: str  # dense | sweep | baseline | tune
    seed: int
    method: str = "none"  # regularizer (sweep) or baseline name
    schedule: str = "-"
    sparsity: float = 0.0
    setup_override: tuple[tuple[str, float], ...] = ()  # tune: one coefficient changed


@dataclass
class Digits:
    """The engine's Dataset (noisy train labels, clean validation) plus what only the benchmark looks at."""

    ds: Dataset
    x_test: torch.Tensor
    y_test: torch.Tensor
    y_train_clean: torch.Tensor
    flipped: torch.Tensor  # bool per training sample


@dataclass
class Run:
    task: Task
    metrics: dict[str, float]
    sparsity_measured: dict[str, float]  # "all" and per prunable parameter
    epochs_run: int
    best_epoch: int | None
    seconds: float
    state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        t = self.task
        head = {"group": t.group, "method": t.method, "schedule": t.schedule, "sparsity": t.sparsity, "seed": t.seed}
        tail: dict[str, Any] = {f"sparsity_{k}": round(v, 4) for k, v in self.sparsity_measured.items()}
        tail |= {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "seconds": round(self.seconds, 2)}
        return head | {k: round(v, 5) for k, v in self.metrics.items()} | tail


# --- data and model -------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32).reshape(-1, 64), bunch.target.astype(np.int64)


def make_digits(setup: Setup, seed: int) -> Digits:
    """Seeded split into train / validation / test; a fraction of the training labels moved to another class."""
    x, y = _digits()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_train = round(setup.train_fraction * len(x))
    rest = perm[n_train:]
    n_test = round(setup.test_fraction * len(rest))
    train, test, val = perm[:n_train], rest[:n_test], rest[n_test:]
    noisy = y[train].copy()
    flipped = rng.random(n_train) < setup.label_noise
    noisy[flipped] = (noisy[flipped] + rng.integers(1, 10, int(flipped.sum()))) % 10
    t = torch.from_numpy
    ds = Dataset(t(x[train]), t(noisy), t(x[val]), t(y[val]), "given")
    return Digits(ds, t(x[test]), t(y[test]), t(y[train]), t(flipped))


def make_mlp(hidden: int, dropout: float = 0.0) -> nn.Sequential:
    """64 -> hidden -> hidden -> 10; the engine leaves the classifier (last linear) dense by default."""
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )  # fmt: skip


# --- engine specs ---------------------------------------------------------------------------------------------


def regularizers(setup: Setup, name: str) -> dict[str, object]:
    if name == "distill":
        return {"distillation": {"alpha": setup.distill_alpha, "temperature": setup.distill_temperature}}
    if name in ("l2", "l1", "group_lasso"):
        return {name: getattr(setup, name)}
    return {}


def finetune_spec(setup: Setup, regularizer: str, epochs: int, early_stopping: bool = False) -> FinetuneSpec:
    spec: dict[str, object] = {
        "epochs": epochs,
        "batch_size": setup.batch_size,
        "optimizer": {"name": "adam", "lr": setup.lr},
        "regularizers": regularizers(setup, regularizer),
    }
    if early_stopping:
        spec["early_stopping"] = {"patience": setup.patience, "metric": "val_accuracy", "restore_best": True}
    return FinetuneSpec.model_validate(spec)


def pruning_spec(setup: Setup, n_train: int, sparsity: float, schedule: str) -> MagnitudePruning:
    """Global magnitude pruning; gradual masks are recomputed once per epoch up to 2/3 of the fine-tuning."""
    steps_per_epoch = -(-n_train // setup.batch_size)
    sched = {"kind": schedule if sparsity > 0 else "oneshot", "frequency": steps_per_epoch}
    return MagnitudePruning.model_validate({"scope": "global", "sparsity": sparsity, "schedule": sched})


# --- one run --------------------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    data: Digits,
    ft: FinetuneSpec,
    cfg: MagnitudePruning,
    seed: int,
    teacher: nn.Module | None = None,
) -> FinetuneResult:
    """Prune to cfg (sparsity 0: not at all) while fine-tuning by ft: prunekit's own training plan."""
    logits = [predict_logits(teacher, x, 1024, CPU) for x in (data.ds.x_train, data.ds.x_val)] if teacher else None
    inp = PhaseInputs(
        model=LoadedModel(model, "state_dict"),
        data=data.ds,
        targets=select_targets(model, cfg),
        cfg=cfg,
        teacher_train_logits=logits[0] if logits else None,
        teacher_val_logits=logits[1] if logits else None,
        device=CPU,
        seed=seed,
        eval_batch_size=1024,
    )
    result = prune_and_recover(inp, ft, lambda record, fraction: None)
    model.eval()
    return result


def evaluate(model: nn.Module, data: Digits) -> dict[str, float]:
    """Train metrics on the (noisy) labels the model was trained on; validation and test are clean."""
    train_logits = predict_logits(model, data.ds.x_train, 1024, CPU)
    train = split_metrics(train_logits, data.ds.y_train)
    val = split_metrics(predict_logits(model, data.ds.x_val, 1024, CPU), data.ds.y_val)
    test = split_metrics(predict_logits(model, data.x_test, 1024, CPU), data.y_test)
    pred, noisy = train_logits.argmax(1), data.ds.y_train
    assert noisy is not None and train.accuracy is not None and val.accuracy is not None and test.accuracy is not None
    return {
        "train_acc": train.accuracy,
        "train_loss": train.loss or 0.0,
        "val_acc": val.accuracy,
        "val_loss": val.loss or 0.0,
        "gap": train.accuracy - val.accuracy,
        "test_acc": test.accuracy,
        "train_clean_acc": float((pred == data.y_train_clean).float().mean()),
        # Of the flipped training samples, the fraction predicted as their wrong label: memorised noise.
        "noise_fit": float((pred[data.flipped] == noisy[data.flipped]).float().mean()),
    }


def target_sparsity(model: nn.Module) -> dict[str, float]:
    """Zeros among the prunable weights (the engine's default targets: all linear weights but the classifier),
    overall and per layer (a global ranking decides how the layers share it)."""
    targets = select_targets(model, MagnitudePruning())
    zeros = {t.name: int((t.param == 0).sum()) for t in targets}
    out = {"all": sum(zeros.values()) / sum(t.param.numel() for t in targets)}
    return out | {t.name: zeros[t.name] / t.param.numel() for t in targets}


def _fresh_model(setup: Setup, seed: int, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    return make_mlp(setup.hidden, dropout)


def _build(
    setup: Setup, task: Task, data: Digits, dense: dict[str, torch.Tensor] | None
) -> tuple[nn.Module, Callable[[], FinetuneResult]]:
    """The model a task starts from, and a call that trains it (returning the engine's FinetuneResult)."""
    n, total = len(data.ds.x_train), setup.dense_epochs + setup.finetune_epochs
    dense_cfg = pruning_spec(setup, n, 0.0, "oneshot")
    if task.group == "dense":
        model = _fresh_model(setup, task.seed)
        return model, lambda: train(model, data, finetune_spec(setup, "none", setup.dense_epochs), dense_cfg, task.seed)
    if task.group in ("baseline", "tune"):
        model = _fresh_model(setup, task.seed, setup.dropout if task.method == "dropout" else 0.0)
        reg = task.method if task.method in REGULARIZERS else "none"
        ft = finetune_spec(setup, reg, total, early_stopping=task.method == "early_stopping")
        return model, lambda: train(model, data, ft, dense_cfg, task.seed)
    assert dense is not None
    model, teacher = _fresh_model(setup, task.seed), _fresh_model(setup, task.seed)
    model.load_state_dict(dense)
    teacher.load_state_dict(dense)
    teacher.eval()
    cfg = pruning_spec(setup, n, task.sparsity, task.schedule)
    ft = finetune_spec(setup, task.method, setup.finetune_epochs)
    return model, lambda: train(model, data, ft, cfg, task.seed, teacher if task.method == "distill" else None)


def run_task(setup: Setup, task: Task, dense: dict[str, torch.Tensor] | None = None) -> Run:
    """One point of one seed, in this process (single-threaded: the pool runs two of these at once)."""
    torch.set_num_threads(1)
    setup = replace(setup, **dict[str, Any](task.setup_override))
    started = time.perf_counter()
    data = make_digits(setup, task.seed)
    model, fit = _build(setup, task, data, dense)
    result = fit()
    metrics = evaluate(model, data)
    state = copy.deepcopy(model.state_dict()) if task.group == "dense" else None
    seconds = time.perf_counter() - started
    return Run(task, metrics, target_sparsity(model), len(result.history), result.best_epoch, seconds, state)


# --- scheduling -----------------------------------------------------------------------------------------------


def sweep_tasks(seed: int, regs: Iterable[str], schedules: Iterable[str], sparsities: Iterable[float]) -> list[Task]:
    """Every (regularizer, schedule, sparsity) of one seed; sparsity 0 once per regularizer (no schedule)."""
    tasks = []
    for reg in regs:
        for s in sparsities:
            for sched in schedules if s > 0 else ("-",):
                tasks.append(Task("sweep", seed, reg, sched, s))
    return tasks


def run_all(setup: Setup, args: argparse.Namespace, log: Callable[[Run, int, int], None]) -> list[Run]:
    """Dense models first (their results unlock that seed's sweep), baselines alongside, in a process pool."""
    seeds = range(args.seeds)
    pending_sweeps = {s: sweep_tasks(s, args.regularizers, args.schedules, args.sparsities) for s in seeds}
    first = [Task("dense", s) for s in seeds] + [Task("baseline", s, b) for s in seeds for b in args.baselines]
    total = len(first) + sum(len(v) for v in pending_sweeps.values())
    runs: list[Run] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures: set[Future[Run]] = {pool.submit(run_task, setup, t) for t in first}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                run = fut.result()
                runs.append(run)
                log(run, len(runs), total)
                if run.task.group == "dense":
                    dense = run.state
                    futures |= {pool.submit(run_task, setup, t, dense) for t in pending_sweeps[run.task.seed]}
                    run.state = None
    return runs


def progress_logger(started: float) -> Callable[[Run, int, int], None]:
    def log(run: Run, k: int, total: int) -> None:
        t, m = run.task, run.metrics
        point = f"{t.group} {t.method} {t.schedule} s={t.sparsity:g} seed {t.seed}"
        elapsed = time.perf_counter() - started
        print(
            f"[{k}/{total}] {point}: train {m['train_acc']:.3f} val {m['val_acc']:.3f} gap {m['gap']:+.3f} "
            f"({run.seconds:.1f} s; {elapsed:.0f} s elapsed)",
            file=sys.stderr,
            flush=True,
        )

    return log


# --- statistics -----------------------------------------------------------------------------------------------


def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float(arr.mean()), 0.0
    return float(arr.mean()), t_quantile(len(arr) - 1) * float(arr.std(ddof=1)) / math.sqrt(len(arr))


Key = tuple[str, str, str, float]  # group, method, schedule, sparsity


def aggregate(runs: list[Run]) -> dict[Key, dict[str, tuple[float, float]]]:
    by_point: dict[Key, list[Run]] = defaultdict(list)
    for r in runs:
        by_point[(r.task.group, r.task.method, r.task.schedule, r.task.sparsity)].append(r)
    out = {}
    for key, rs in sorted(by_point.items()):
        stats = {m: mean_ci([r.metrics[m] for r in rs]) for m in METRICS}
        for name in rs[0].sparsity_measured:
            stats[f"sparsity_{name}"] = mean_ci([r.sparsity_measured[name] for r in rs])
        stats["n"] = (float(len(rs)), 0.0)
        out[key] = stats
    return out


def sweep_curve(agg: dict[Key, dict[str, tuple[float, float]]], reg: str, sched: str) -> list[tuple[float, dict]]:
    """(sparsity, stats) along one regularizer x schedule, sparsity 0 (unscheduled) included."""
    pts = [(k[3], v) for k, v in agg.items() if k[0] == "sweep" and k[1] == reg and k[2] in (sched, "-")]
    return sorted(pts, key=lambda p: p[0])


def paired_diff(runs: list[Run], a: Key, b: Key, metric: str) -> tuple[float, float]:
    """Mean and 95% CI of a - b over the seeds both have (same split, noise and initialisation)."""
    va = {r.task.seed: r.metrics[metric] for r in runs if _key(r) == a}
    vb = {r.task.seed: r.metrics[metric] for r in runs if _key(r) == b}
    return mean_ci([va[s] - vb[s] for s in sorted(va.keys() & vb.keys())])


def _key(r: Run) -> Key:
    return (r.task.group, r.task.method, r.task.schedule, r.task.sparsity)


# --- output ---------------------------------------------------------------------------------------------------


def pct(stat: tuple[float, float], signed: bool = False) -> str:
    mean, half = stat
    return f"{100 * mean:+.1f} ± {100 * half:.1f}" if signed else f"{100 * mean:.1f} ± {100 * half:.1f}"


def baseline_table(agg: dict[Key, dict[str, tuple[float, float]]]) -> list[str]:
    lines = [
        "| dense model | train acc (noisy labels) | val acc | test acc | gap | noise memorised |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [(k, v) for k, v in agg.items() if k[0] in ("dense", "baseline")]
    rows += [(k, v) for k, v in agg.items() if k[0] == "sweep" and k[3] == 0.0]
    for (group, method, _, _), v in rows:
        name = {"dense": "dense (start of every run)", "baseline": f"{method} from scratch"}.get(group)
        name = name or f"dense + fine-tune with {method} (sweep, sparsity 0)"
        cells = [pct(v["train_acc"]), pct(v["val_acc"]), pct(v["test_acc"]), pct(v["gap"], True)]
        lines.append(f"| {name} | {' | '.join(cells)} | {pct(v['noise_fit'])} |")
    return lines


def sweep_table(agg: dict[Key, dict[str, tuple[float, float]]], regs: list[str], schedules: list[str]) -> list[str]:
    shown = [0.0, 0.5, 0.9, 0.98]
    head = " | ".join(f"gap at {100 * s:g}%" for s in shown)
    lines = [
        f"| regularizer | schedule | best val acc | at sparsity | noise memorised there | {head} |",
        "|---|---|---:|---:|---:|" + "---:|" * len(shown),
    ]
    for reg in regs:
        for sched in schedules:
            curve = dict(sweep_curve(agg, reg, sched))
            if not curve:
                continue
            best = max(curve, key=lambda s: curve[s]["val_acc"][0])
            cells = [pct(curve[best]["val_acc"]), f"{100 * best:g}%", pct(curve[best]["noise_fit"])]
            cells += [pct(curve[s]["gap"], True) if s in curve else "-" for s in shown]
            lines.append(f"| {reg} | {sched} | {' | '.join(cells)} |")
    return lines


def schedule_table(runs: list[Run], regs: list[str], sparsities: list[float]) -> list[str]:
    """Gradual minus oneshot at the same regularizer and sparsity, paired by seed."""
    head = " | ".join(f"Δ val at {100 * s:g}% | Δ gap at {100 * s:g}%" for s in sparsities)
    lines = [f"| regularizer | {head} |", "|---|" + "---:|" * (2 * len(sparsities))]
    for reg in regs:
        cells = []
        for s in sparsities:
            grad, one = ("sweep", reg, "gradual", s), ("sweep", reg, "oneshot", s)
            cells += [pct(paired_diff(runs, grad, one, m), True) for m in ("val_acc", "gap")]
        lines.append(f"| {reg} | {' | '.join(cells)} |")
    return lines


def comparison_table(runs: list[Run], agg: dict[Key, dict[str, tuple[float, float]]], refs: list[Key]) -> list[str]:
    """Each regularizer x schedule at its best pruned sparsity (by mean val acc) minus references, paired by seed:
    the same fine-tuning without pruning, then the dense baselines in ``refs``."""
    names = ["unpruned", *(r[1] for r in refs)]
    head = " | ".join(f"Δ val vs {n} | Δ gap vs {n}" for n in names)
    lines = [f"| point | {head} |", "|---|" + "---:|" * (2 * len(names))]
    for reg, sched in sorted({(k[1], k[2]) for k in agg if k[0] == "sweep" and k[2] != "-"}):
        pruned = [p for p in sweep_curve(agg, reg, sched) if p[0] > 0]
        best_s = max(pruned, key=lambda p: p[1]["val_acc"][0])[0]
        key: Key = ("sweep", reg, sched, best_s)
        cells = []
        for ref in [("sweep", reg, "-", 0.0), *refs]:
            cells += [pct(paired_diff(runs, key, ref, m), True) for m in ("val_acc", "gap")]
        lines.append(f"| {reg} {sched} {100 * best_s:g}% | {' | '.join(cells)} |")
    return lines


def write_runs(runs: list[Run], out_dir: Path) -> None:
    rows = [r.row() for r in sorted(runs, key=lambda r: (*_key(r), r.task.seed))]
    with (out_dir / "runs.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_summary(agg: dict[Key, dict[str, tuple[float, float]]], meta: dict[str, Any], out_dir: Path) -> None:
    points = [
        {"group": k[0], "method": k[1], "schedule": k[2], "sparsity": k[3]}
        | {m: {"mean": v[m][0], "ci95": v[m][1]} for m in v}
        for k, v in agg.items()
    ]
    (out_dir / "summary.json").write_text(json.dumps({"meta": meta, "points": points}, indent=1))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"


# --- plots ----------------------------------------------------------------------------------------------------


def plot(agg: dict[Key, dict[str, tuple[float, float]]], args: argparse.Namespace, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.schedules), figsize=(6.5 * len(args.schedules), 4.8), sharey=True)
    axes = np.atleast_1d(axes)
    xs = sorted(args.sparsities)
    for ax, sched in zip(axes, args.schedules, strict=True):
        _draw_baselines(ax, agg, metric, args.regularizers)
        for i, reg in enumerate(args.regularizers):
            _draw_curve(ax, sweep_curve(agg, reg, sched), xs, metric, reg, f"C{i}")
        ax.set_xticks(range(len(xs)), [f"{100 * s:g}%" for s in xs])
        ax.set_xlabel("sparsity of the prunable weights (classifier dense)")
        ax.set_title(f"{sched} pruning + fine-tuning")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel({"val_acc": "validation accuracy (clean)", "gap": "gap: train (noisy) - validation"}[metric])
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.suptitle(f"digits, {args.seeds} seeds: mean and 95% t-interval; horizontal: dense baselines (band = CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_curve(ax: Any, curve: list[tuple[float, dict]], xs: list[float], metric: str, label: str, color: str) -> None:
    pos = [xs.index(s) for s, _ in curve]
    mean = np.array([v[metric][0] for _, v in curve])
    half = np.array([v[metric][1] for _, v in curve])
    ax.plot(pos, mean, marker="o", color=color, label=f"prune + {label}")
    ax.fill_between(pos, mean - half, mean + half, color=color, alpha=0.18)


BASELINE_STYLE = {  # the dense baseline of a regularizer in that regularizer's colour (see plot's C0..C4)
    "none": ("C0", ":"), "l2": ("C1", "--"), "l1": ("C2", "--"), "group_lasso": ("C3", "--"),
    "dropout": ("k", "-."), "early_stopping": ("k", "--"),
}  # fmt: skip


def _draw_baselines(ax: Any, agg: dict[Key, dict[str, tuple[float, float]]], metric: str, regs: list[str]) -> None:
    for key, v in agg.items():
        if key[0] not in ("dense", "baseline"):
            continue
        color, style = BASELINE_STYLE.get(key[1], ("0.5", "--"))
        if key[1] in regs:
            color = f"C{regs.index(key[1])}"
        mean, half = v[metric]
        label = "dense, overfit (start of runs)" if key[0] == "dense" else f"dense from scratch + {key[1]}"
        ax.axhline(mean, color=color, linestyle=style, linewidth=1.3, label=label)
        ax.axhspan(mean - half, mean + half, color=color, alpha=0.07)


# --- tuning ---------------------------------------------------------------------------------------------------


def tune(setup: Setup, args: argparse.Namespace) -> None:
    """Regularizer strengths for dense training from scratch, on a seed the sweep does not use."""
    tasks = [Task("tune", args.tune_seed, "none")]
    tasks += [Task("tune", args.tune_seed, n, setup_override=((n, v),)) for n, grid in TUNE_GRID.items() for v in grid]
    tasks += [Task("tune", args.tune_seed, "dropout", setup_override=(("dropout", p),)) for p in TUNE_DROPOUT]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for run in pool.map(run_task, [setup] * len(tasks), tasks):
            m = run.task.setup_override
            print(f"{run.task.method} {m}: train {run.metrics['train_acc']:.3f} val {run.metrics['val_acc']:.3f}")


# --- main -----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Setup()
    p.add_argument("--train-fraction", type=float, default=d.train_fraction)
    p.add_argument("--label-noise", type=float, default=d.label_noise, help="fraction of training labels flipped")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--dense-epochs", type=int, default=d.dense_epochs)
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    for name in ("l2", "l1", "group_lasso", "dropout"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9, 0.95, 0.98])
    p.add_argument("--regularizers", nargs="+", choices=REGULARIZERS, default=list(REGULARIZERS))
    p.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tune", action="store_true", help="only print dense val accuracy over a grid of strengths")
    p.add_argument("--tune-seed", type=int, default=100)
    return p.parse_args()


def setup_from(args: argparse.Namespace) -> Setup:
    names = ("train_fraction", "label_noise", "hidden", "dense_epochs", "finetune_epochs", "l2", "l1", "group_lasso")
    return Setup(**{n: getattr(args, n) for n in names}, dropout=args.dropout)


def report(runs: list[Run], args: argparse.Namespace, setup: Setup, seconds: float) -> Iterator[str]:
    agg = aggregate(runs)
    yield f"Machine: {machine()}; {args.workers} worker processes x 1 thread; wall time {seconds:.0f} s"
    yield f"Setup: {json.dumps(asdict(setup))}"
    yield from ["", *baseline_table(agg), "", *sweep_table(agg, args.regularizers, args.schedules), ""]
    refs: list[Key] = [("baseline", b, "-", 0.0) for b in ("l2", "early_stopping") if b in args.baselines]
    if refs:
        yield from [*comparison_table(runs, agg, refs), ""]
    if set(SCHEDULES) <= set(args.schedules):
        yield from schedule_table(runs, args.regularizers, [s for s in args.sparsities if s >= 0.9])


def main() -> None:
    args = parse_args()
    setup = setup_from(args)
    if args.tune:
        tune(setup, args)
        return
    started = time.perf_counter()
    runs = run_all(setup, args, progress_logger(started))
    seconds = time.perf_counter() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_runs(runs, args.out_dir)
    agg = aggregate(runs)
    meta = {"setup": asdict(setup), "machine": machine(), "workers": args.workers, "wall_seconds": round(seconds)}
    meta |= {"seeds": args.seeds, "command": " ".join(sys.argv)}
    write_summary(agg, meta, args.out_dir)
    plot(agg, args, "val_acc", args.out_dir / "val_acc_vs_sparsity.png")
    plot(agg, args, "gap", args.out_dir / "gap_vs_sparsity.png")
    text = "\n".join(report(runs, args, setup, seconds)) + "\n"
    (args.out_dir / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
