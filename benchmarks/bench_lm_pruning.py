"""A small causal LM trained here on real English text, pruned 50% by magnitude through prunekit's engine.

Corpus: English text that ships with Python: the pydoc help topics and the docstrings of the top-level standard library
modules (parsed with ast, never imported), one document per topic or module, split by document (seed 0) into
train.jsonl and heldout.jsonl. A byte-level BPE tokenizer is trained on train.jsonl only; a 4-layer GPT-2 is
trained on the blocks the engine will use for training (its seeded block split of train.jsonl), so the report's
validation blocks are unseen by the dense model and by fine-tuning, and heldout.jsonl is unseen text of other
documents. Both are re-evaluated on every artifact with plain transformers (its own `labels=` loss).

Variants (global magnitude pruning to 50%, the engine's defaults otherwise: the tied embedding / LM head is the
classifier and stays dense, biases and LayerNorms stay dense):
- oneshot: no fine-tuning
- lm: fine-tuning on the next-token loss
- lm+kd: next-token loss + distillation from the unpruned model (alpha 0.5)
- kd: distillation only (alpha 1.0)
- dense+lm: the reference, the same fine-tuning at sparsity 0 (how much of "after" is just more training)
Every job fine-tunes on 800 of the train blocks (data.max_train_samples) to keep the run short on 2 cores.

The corpus, tokenizer and dense checkpoint are cached under benchmarks/.cache/ (ignored by git through its own
.gitignore); delete it to retrain.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lm_pruning.py [--quick] [--seeds 3] [--epochs 2] [--out F]
(--quick: 40 pydoc topics, a 2-layer model, about a minute; the default: about 8 min to train the dense model once,
then about 7 min of jobs with one seed, 13 with three.)
"""

from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import json
import math
import os
import platform
import pydoc_data.topics
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from tests.worker.engine.huggingface.builders import archive, extract
from worker.engine.api import JobInputs, run_job

CACHE = Path(__file__).resolve().parent / ".cache"
VAL_FRACTION, SPLIT_SEED = 0.2, 0  # the engine's data.val_fraction / data.split_seed defaults
REFERENCE = "dense+lm"  # the same fine-tuning without pruning: how much of "after" is just more training
VARIANTS: dict[str, dict[str, object] | None] = {
    REFERENCE: {},
    "oneshot": None,
    "lm": {},
    "lm+kd": {"distillation": {"alpha": 0.5, "temperature": 2.0}},
    "kd": {"distillation": {"alpha": 1.0, "temperature": 2.0}},
}


@dataclass(frozen=True)
class Setup:
    """Everything that decides the corpus, tokenizer and dense model (its hash names the cache folder)."""

    docstrings: bool = True
    max_docs: int | None = None
    vocab: int = 2048
    seq_len: int = 128
    n_layer: int = 4
    n_embd: int = 128
    steps: int = 600
    batch: int = 16
    lr: float = 3e-3
    heldout_fraction: float = 0.1

    def key(self) -> str:
        """A short stable name of this setup for the cache folder."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


QUICK = Setup(docstrings=False, max_docs=40, vocab=512, seq_len=64, n_layer=2, n_embd=64, steps=150)
FT_BLOCKS, QUICK_FT_BLOCKS = 800, 200  # data.max_train_samples: the fine-tuning budget of every job


# ---- corpus and tokenizer ----


def documents(docstrings: bool) -> list[str]:
    """The pydoc topics (by name) and, optionally, each top-level stdlib module's docstrings joined (by name)."""
    docs = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    if docstrings:
        root = Path(sysconfig.get_paths()["stdlib"])
        docs += [_module_docstrings(path) for path in sorted(root.glob("*.py"))]
    return [d for d in docs if len(d) > 200]


def _module_docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return ""
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = (ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds))
    return "\n\n".join(d for d in found if d and len(d) > 40)


def write_corpus(setup: Setup, folder: Path) -> tuple[Path, Path]:
    """train.jsonl and heldout.jsonl: the documents split by document with a fixed seed."""
    docs = documents(setup.docstrings)[: setup.max_docs]
    order = list(range(len(docs)))
    random.Random(0).shuffle(order)
    n_heldout = round(len(docs) * setup.heldout_fraction)
    paths = folder / "train.jsonl", folder / "heldout.jsonl"
    for path, idx in zip(paths, (sorted(order[n_heldout:]), sorted(order[:n_heldout])), strict=True):
        path.write_text("".join(json.dumps({"text": docs[i]}) + "\n" for i in idx))
    return paths


def train_tokenizer(texts: list[str], vocab: int) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE with every byte in its alphabet (unseen text never needs [UNK])."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["[UNK]", "[PAD]", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]", pad_token="[PAD]"
    )


def texts_of(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def packed_blocks(tok: transformers.PreTrainedTokenizerBase, path: Path, seq_len: int) -> torch.Tensor:
    """Blocks as the engine packs .jsonl for causal LMs: each text's tokens + the end token, cut into seq_len."""
    ids: list[int] = []
    for text in texts_of(path):
        ids += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def engine_split(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) blocks of the engine's seeded split (data.val_fraction 0.2, data.split_seed 0)."""
    n = len(blocks)
    n_val = max(1, round(n * VAL_FRACTION))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return blocks[perm[n_val:]], blocks[perm[:n_val]]


# ---- dense model ----


def train_dense(setup: Setup, tok: transformers.PreTrainedTokenizerFast, train: torch.Tensor, folder: Path) -> float:
    """Train a GPT-2 from scratch on `train` (AdamW, warmup + cosine); save it with its tokenizer; seconds taken."""
    cfg = transformers.GPT2Config(
        n_layer=setup.n_layer, n_embd=setup.n_embd, n_head=max(1, setup.n_embd // 32), vocab_size=len(tok),
        n_positions=setup.seq_len, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, weight_decay=0.01)
    warmup = max(1, setup.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / setup.steps)))
    )
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    model.train()
    order = torch.randperm(len(train), generator=gen)
    for step in range(setup.steps):
        start = (step * setup.batch) % len(train)
        if start + setup.batch > len(train):
            order, start = torch.randperm(len(train), generator=gen), 0
        batch = train[order[start : start + setup.batch]]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == setup.steps - 1:
            print(f"  dense step {step}/{setup.steps} loss {float(loss.detach()):.3f}", file=sys.stderr)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return time.perf_counter() - started


def hf_perplexity(folder: Path, blocks: torch.Tensor, batch: int = 64) -> float:
    """Token-weighted perplexity from plain transformers: from_pretrained and the model's own `labels=` loss."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for chunk in blocks.split(batch):
            count = chunk.shape[0] * (chunk.shape[1] - 1)
            total += float(model(input_ids=chunk, labels=chunk).loss) * count
            tokens += count
    return math.exp(total / tokens)


@dataclass
class Prepared:
    archive: Path
    train_jsonl: Path
    dense_dir: Path
    val_blocks: torch.Tensor  # the engine's validation blocks of train.jsonl
    heldout_blocks: torch.Tensor  # every block of heldout.jsonl
    info: dict[str, object]


def prepare(setup: Setup) -> Prepared:
    """Corpus, tokenizer and dense checkpoint, built once per setup and cached."""
    folder = CACHE / setup.key()
    dense_dir, model_tar = folder / "dense", folder / "dense.tar.gz"
    info_path = folder / "info.json"
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    if not info_path.is_file():
        folder.mkdir(exist_ok=True)
        train_jsonl, heldout_jsonl = write_corpus(setup, folder)
        new_tok = train_tokenizer(texts_of(train_jsonl), setup.vocab)
        train, _ = engine_split(packed_blocks(new_tok, train_jsonl, setup.seq_len))
        seconds = train_dense(setup, new_tok, train, dense_dir)
        archive(dense_dir, model_tar)
        info = {"setup": asdict(setup), "train_seconds": round(seconds, 1), "trained": _now()}
        info_path.write_text(json.dumps(info, indent=2))
    tok = transformers.AutoTokenizer.from_pretrained(dense_dir)
    train_jsonl, heldout_jsonl = folder / "train.jsonl", folder / "heldout.jsonl"
    train_all = packed_blocks(tok, train_jsonl, setup.seq_len)
    _, val = engine_split(train_all)
    heldout = packed_blocks(tok, heldout_jsonl, setup.seq_len)
    info = json.loads(info_path.read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(dense_dir)
    info.update(
        params=sum(p.numel() for p in model.parameters()),
        docs_train=len(texts_of(train_jsonl)),
        docs_heldout=len(texts_of(heldout_jsonl)),
        blocks_train=len(train_all) - len(val),
        blocks_val=len(val),
        blocks_heldout=len(heldout),
        chars=sum(len(t) for p in (train_jsonl, heldout_jsonl) for t in texts_of(p)),
    )
    return Prepared(model_tar, train_jsonl, dense_dir, val, heldout, info)


# ---- pruning jobs ----


def job_spec(variant: str, setup: Setup, epochs: int, seed: int, ft_blocks: int) -> JobSpec:
    """Global magnitude 50% (0% for the reference); fine-tuning per variant: AdamW 1e-3, cosine, batch 16."""
    regularizers = VARIANTS[variant]
    finetune: dict[str, object] = {
        "epochs": 0 if regularizers is None else epochs,
        "batch_size": 16,
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "lr_schedule": {"kind": "cosine"},
        "regularizers": regularizers or {},
    }
    sparsity = 0.0 if variant == REFERENCE else 0.5
    return JobSpec.model_validate(
        {
            "pruning": {"method": "magnitude", "scope": "global", "sparsity": sparsity},
            "finetune": finetune,
            "data": {"seq_len": setup.seq_len, "max_train_samples": ft_blocks},
            "evaluation": {"batch_size": 64, "latency": {"repeats": 3, "warmup": 1}},
            "seed": seed,
        }
    )


@dataclass
class Row:
    variant: str
    seed: int
    sparsity: float
    report_before: float
    report_after: float
    hf_after: float
    heldout_after: float
    seconds: float


def run_variant(prep: Prepared, args: argparse.Namespace, variant: str, seed: int, tmp: Path) -> Row:
    """One compress job in-process; the artifact re-evaluated with plain transformers must match the report."""
    out = tmp / f"{variant}-{seed}"
    spec = job_spec(variant, args.setup, args.epochs, seed, args.ft_blocks)
    started = time.perf_counter()
    outputs = run_job(
        JobInputs(prep.archive, spec, prep.train_jsonl), out, isolate=False, render_report=False, threads=args.threads
    )
    seconds = time.perf_counter() - started
    report = Report.model_validate_json(outputs.report_path.read_text())
    if report.before is None or report.after is None or outputs.artifact_path is None:
        raise SystemExit(f"{variant}: the report has no before/after metrics or no artifact")
    before, after = report.before.val.perplexity, report.after.val.perplexity
    if before is None or after is None:
        raise SystemExit(f"{variant}: the report has no validation perplexity")
    folder = extract(outputs.artifact_path, tmp / f"{variant}-{seed}-unpacked")
    hf_after = hf_perplexity(folder, prep.val_blocks)
    if not math.isclose(hf_after, after, rel_tol=1e-4):
        raise SystemExit(f"{variant}: report val perplexity {after:.4f} != transformers' {hf_after:.4f}")
    row = Row(
        variant, seed, report.sparsity.global_sparsity, before, after, hf_after,
        hf_perplexity(folder, prep.heldout_blocks), seconds,
    )  # fmt: skip
    print(f"  {variant} seed {seed}: {row}", file=sys.stderr)
    return row


# ---- output ----


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _cell(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render(rows: list[Row], dense: dict[str, float], prep: Prepared, args: argparse.Namespace, total: float) -> str:
    """The markdown table with the command, machine, data and model lines."""
    info, setup = prep.info, args.setup
    flags = " --quick" * args.quick + f" --epochs {args.epochs} --seeds {args.seeds}"
    lines = [
        f"Command: `OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/bench_lm_pruning.py{flags}`  ",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), {args.threads} torch thread(s), torch "
        f"{torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}; "
        f"{_now()}; load average {os.getloadavg()[0]:.1f} at the end. Jobs: {total:.0f} s; dense training "
        f"{info['train_seconds']} s (cached for reruns).  ",
        f"Data: {info['chars']:,} characters of English in {info['docs_train']} train / {info['docs_heldout']} "
        f"held-out documents; train.jsonl packs into {info['blocks_train']} train / {info['blocks_val']} validation "
        f"blocks of {setup.seq_len} tokens (the engine's seeded split), heldout.jsonl into {info['blocks_heldout']}. "
        f"Fine-tuning: {args.ft_blocks} of the train blocks (data.max_train_samples), {args.epochs} epoch(s), AdamW "
        "1e-3 cosine, batch 16.  ",
        f"Model: GPT-2, {setup.n_layer} layers, n_embd {setup.n_embd}, BPE vocabulary {setup.vocab}, "
        f"{info['params']:,} parameters, trained {setup.steps} steps of {setup.batch} blocks. Dense validation "
        f"perplexity {dense['val']:.2f} (report: {dense['report']:.2f}), held-out documents {dense['heldout']:.2f}.",
        "",
        "| variant | fine-tuning | sparsity | val ppl before (report) | val ppl after (report) | "
        "after, transformers re-eval | held-out docs ppl (transformers) | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, reg in VARIANTS.items():
        mine = [r for r in rows if r.variant == variant]
        if not mine:
            continue
        what = "none" if reg is None else _describe(reg)
        lines.append(
            f"| {variant} | {what} | {mine[0].sparsity:.3f} | {_cell([r.report_before for r in mine])} | "
            f"{_cell([r.report_after for r in mine])} | {_cell([r.hf_after for r in mine])} | "
            f"{_cell([r.heldout_after for r in mine])} | {_cell([r.seconds for r in mine], 0)} |"
        )
    seeds = sorted({r.seed for r in rows})
    spread = "; cells are mean ± sd over seeds" if len(seeds) > 1 else ""
    lines += ["", f"Seeds {', '.join(map(str, seeds))}{spread} (oneshot has no randomness: one run)."]
    return "\n".join(lines) + "\n"


def _describe(reg: dict[str, object]) -> str:
    kd = reg.get("distillation")
    if not isinstance(kd, dict):
        return "next-token loss"
    return f"KD alpha {kd['alpha']} T {kd['temperature']}" + (" + next-token loss" if kd["alpha"] < 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~3-minute smoke run: pydoc topics, 2 layers")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 2, quick 1)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per fine-tuned variant (mean ± sd)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cores are shared)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    args.epochs = args.epochs if args.epochs is not None else (1 if args.quick else 2)
    args.setup = QUICK if args.quick else Setup()
    args.ft_blocks = QUICK_FT_BLOCKS if args.quick else FT_BLOCKS
    torch.set_num_threads(args.threads)
    prep = prepare(args.setup)
    print(f"prepared: {prep.info}", file=sys.stderr)
    dense = {"val": hf_perplexity(prep.dense_dir, prep.val_blocks),
             "heldout": hf_perplexity(prep.dense_dir, prep.heldout_blocks)}  # fmt: skip
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            for seed in range(1 if VARIANTS[variant] is None else args.seeds):
                rows.append(run_variant(prep, args, variant, seed, Path(tmp)))
    dense["report"] = rows[0].report_before
    if not math.isclose(dense["report"], dense["val"], rel_tol=1e-4):
        raise SystemExit(f"dense: report val perplexity {dense['report']:.4f} != transformers' {dense['val']:.4f}")
    table = render(rows, dense, prep, args, time.perf_counter() - started)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
