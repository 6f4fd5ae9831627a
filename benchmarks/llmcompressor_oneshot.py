"""llmcompressor's one-shot SparseGPT or Wanda on a saved GPT-2, for bench_llm_oneshot.py (issue 13).

Runs under a separate python that has llmcompressor (it is not a prunekit dependency). Reads the dense
checkpoint and a .pt tensor of calibration blocks [n, seq_len], runs `oneshot`, and saves a plain
transformers checkpoint (not llmcompressor's compressed format) so the caller evaluates it like its own rows.
Prints one JSON line: oneshot seconds and the measured sparsity of the block weights.

llmcompressor only prunes modules whose class is (a subclass of) Linear / Conv1d / Conv2d / Conv3d, and
GPT-2's projections are transformers' Conv1D (weight stored [in, out]), so with `--linear` each block
Conv1D is swapped for an nn.Linear computing the same function before oneshot, and swapped back after.

    PYTHON benchmarks/llmcompressor_oneshot.py --model DIR --blocks F.pt --method sparsegpt --pattern 50% \
        --out DIR [--linear]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers
from datasets import Dataset
from transformers.pytorch_utils import Conv1D

SPARSITY = {"50%": (0.5, "0:0"), "70%": (0.7, "0:0"), "2:4": (0.5, "2:4")}


def _replace(model: torch.nn.Module, kind: type, convert: object) -> None:
    """Swap every block module of type `kind` for convert(module), in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, kind) and name.startswith("transformer.h."):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, convert(module))  # type: ignore[operator]


def to_linear(conv: Conv1D) -> torch.nn.Linear:
    """An nn.Linear equal to a Conv1D (which computes x @ W + b with W stored [in, out])."""
    linear = torch.nn.Linear(conv.weight.shape[0], conv.weight.shape[1])
    linear.weight.data = conv.weight.data.t().contiguous()
    linear.bias.data = conv.bias.data.clone()
    return linear


def to_conv1d(linear: torch.nn.Linear) -> Conv1D:
    """The Conv1D equal to an nn.Linear, so the checkpoint loads as a plain GPT-2 again."""
    conv = Conv1D(linear.out_features, linear.in_features)
    conv.weight.data = linear.weight.data.t().contiguous()
    conv.bias.data = linear.bias.data.clone()
    return conv


def block_sparsity(model: torch.nn.Module) -> float:
    """Share of zeros in the 2-D weights of the transformer blocks (what prunekit's rows prune)."""
    weights = [p for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--blocks", type=Path, required=True)
    parser.add_argument("--method", choices=["sparsegpt", "wanda"], required=True)
    parser.add_argument("--pattern", choices=list(SPARSITY), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--linear", action="store_true", help="swap the block Conv1D layers for nn.Linear")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    model = transformers.AutoModelForCausalLM.from_pretrained(args.model).eval()
    if args.linear:
        _replace(model, Conv1D, to_linear)
    blocks = torch.load(args.blocks)
    data = Dataset.from_dict({"input_ids": blocks.tolist(), "attention_mask": torch.ones_like(blocks).tolist()})
    sparsity, mask = SPARSITY[args.pattern]
    modifier = SparseGPTModifier if args.method == "sparsegpt" else WandaPruningModifier
    recipe = modifier(sparsity=sparsity, mask_structure=mask, targets=["Linear"], ignore=["re:.*lm_head"])
    started = time.perf_counter()
    oneshot(
        model=model, dataset=data, recipe=recipe, num_calibration_samples=len(blocks),
        max_seq_length=blocks.shape[1], shuffle_calibration_samples=False, batch_size=1,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if args.linear:
        _replace(model, torch.nn.Linear, to_conv1d)
    # A fresh model saves as plain transformers: oneshot replaced this instance's save_pretrained.
    plain = transformers.AutoModelForCausalLM.from_pretrained(args.model)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(args.out)
    print(json.dumps({"seconds": seconds, "sparsity": block_sparsity(plain)}))


if __name__ == "__main__":
    main()
