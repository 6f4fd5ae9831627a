"""Wanda and SparseGPT (issue 13): exact sparsity per row and per group of 4, layers calibrated on the outputs of
the already pruned layers before them, and SparseGPT reconstructing a layer's outputs better than magnitude."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn
from transformers.pytorch_utils import Conv1D

from prunekit.spec.pruning import CalibratedPruningSpec, SparseGPTPruning, WandaPruning
from tests.worker.engine.huggingface import builders
from worker.engine.errors import InvalidSpecError
from worker.engine.pruning import compute_masks, plan_targets
from worker.engine.pruning.calibrated import Calibration, calibrate, with_masks
from worker.engine.pruning.calibrated.patterns import Pattern
from worker.engine.pruning.calibrated.sparsegpt import sparsegpt_prune

VOCAB = 300


def _gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, use_cache=False, bos_token_id=2,
        eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _llama() -> nn.Module:
    """Llama-style: rotary positions, gated MLP, grouped-query attention (2 key/value heads for 4 query heads)."""
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


MODELS = {"gpt2": _gpt2, "llama": _llama}


@pytest.fixture(scope="module")
def text_ids() -> torch.Tensor:
    """24 blocks of 32 token ids of English text."""
    tok = builders.tokenizer()
    ids = tok(" ".join(builders.ENGLISH[:40]), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids[: 24 * 32]).view(24, 32)


def _run(model: nn.Module, cfg: CalibratedPruningSpec, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    targets = plan_targets(model, cfg, {"input_ids": ids[:1]}).targets
    return calibrate(Calibration(model, {"input_ids": ids}, torch.device("cpu"), 8), targets, cfg).keep


def _as_rows(model: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor as [outputs, inputs] (GPT-2's Conv1D stores [inputs, outputs])."""
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return t.t() if isinstance(module, Conv1D) else t.reshape(t.shape[0], -1)


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("method", [WandaPruning, SparseGPTPruning])
def test_unstructured_removes_the_same_share_of_every_row(arch: str, method: type, text_ids: torch.Tensor) -> None:
    model = MODELS[arch]()
    keep = _run(model, method(sparsity=0.5), text_ids)
    params = dict(model.named_parameters())
    assert len(keep) >= 8
    for name, mask in keep.items():
        rows = _as_rows(model, name, mask)
        assert torch.all((~rows).sum(1) == round(0.5 * rows.shape[1])), name
        assert torch.all(params[name][~mask] == 0) and torch.all(params[name][mask] != 0), name


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("method", [WandaPruning, SparseGPTPruning])
def test_two_of_every_four_inputs_are_kept(arch: str, method: type, text_ids: torch.Tensor) -> None:
    model = MODELS[arch]()
    keep = _run(model, method(pattern="n:m", n=2, m=4), text_ids)
    for name, mask in keep.items():
        rows = _as_rows(model, name, mask)  # groups run along each output's inputs, the dimension kernels reduce
        assert torch.all(rows.reshape(rows.shape[0], -1, 4).sum(-1) == 2), name


def _wanda_masks_from(
    model: nn.Module, original: dict[str, torch.Tensor], ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Wanda's rule applied independently: per row, keep the larger half of |W| x ||x_j|| over ``model``'s inputs."""
    squares: dict[str, torch.Tensor] = {}
    handles = []
    for name in original:
        module = model.get_submodule(name.rsplit(".", 1)[0])
        if not isinstance(module, Conv1D | nn.Linear):
            continue

        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            x = args[0].reshape(-1, args[0].shape[-1])
            squares[name] = squares.get(name, 0) + x.square().sum(0)

        handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for batch in ids.split(8):
            model(input_ids=batch)
    for h in handles:
        h.remove()
    masks = {}
    for name, sq in squares.items():
        scores = _as_rows(model, name, original[name]).abs() * sq.sqrt()
        k = scores.shape[1] // 2
        masks[name] = torch.ones_like(scores, dtype=torch.bool).scatter(1, scores.topk(k, 1, largest=False).indices, 0)
    return masks


def test_each_layer_is_calibrated_on_the_outputs_of_the_pruned_layers_before_it(text_ids: torch.Tensor) -> None:
    dense = _llama()
    original = {n: p.detach().clone() for n, p in dense.named_parameters()}
    pruned = _llama()
    keep = _run(pruned, WandaPruning(sparsity=0.5), text_ids)
    # In the pruned model every layer's input comes from pruned layers only: the masks Wanda chose must be the
    # ones its rule gives on those inputs, not on the dense model's.
    on_pruned = _wanda_masks_from(pruned, {n: original[n] for n in keep}, text_ids)
    on_dense = _wanda_masks_from(dense, {n: original[n] for n in keep}, text_ids)
    assert len(on_pruned) == 14
    for name, mask in on_pruned.items():
        assert torch.equal(_as_rows(pruned, name, keep[name]), mask), name
    assert sum(not torch.equal(on_pruned[n], on_dense[n]) for n in on_pruned) >= 7  # the inputs did change


def _layer_inputs(text_ids: torch.Tensor) -> tuple[Conv1D, torch.Tensor]:
    """The MLP output projection of GPT-2's second block and its inputs (GELU features: strongly correlated)."""
    model = _gpt2()
    layer = model.get_submodule("transformer.h.1.mlp.c_proj")
    assert isinstance(layer, Conv1D)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=text_ids)
    handle.remove()
    return layer, torch.cat(seen)


@pytest.mark.parametrize("pattern", [Pattern(0.5), Pattern(0.7), Pattern(0.5, (2, 4))], ids=["50%", "70%", "2:4"])
def test_sparsegpt_reconstructs_the_layer_better_than_magnitude(pattern: Pattern, text_ids: torch.Tensor) -> None:
    layer, x = _layer_inputs(text_ids)
    w = layer.weight.detach().t().float()  # [outputs, inputs]
    magnitude = w.masked_fill(pattern.prune_mask(w.abs()), 0.0)
    updated, prune = sparsegpt_prune(w, 2 * x.t() @ x / len(x), pattern, blocksize=128, percdamp=0.01)
    assert torch.equal(updated == 0, prune) and torch.equal(prune.sum(1), pattern.prune_mask(w.abs()).sum(1))

    def error(v: torch.Tensor) -> float:
        return float((x @ w.t() - x @ v.t()).norm())

    assert error(updated) < 0.75 * error(magnitude)  # 0.43 (50%), 0.70 (70%), 0.45 (2:4) here


def test_the_mask_method_carries_the_calibrated_masks(text_ids: torch.Tensor) -> None:
    model = _gpt2()
    cfg = SparseGPTPruning(sparsity=0.5)
    targets = plan_targets(model, cfg, {"input_ids": text_ids[:1]}).targets
    keep = calibrate(Calibration(model, {"input_ids": text_ids}, torch.device("cpu"), 8), targets, cfg).keep
    masks = compute_masks(with_masks(targets, keep), cfg)
    assert all(torch.equal(masks.masks[n], keep[n]) for n in keep)
    with pytest.raises(InvalidSpecError, match="sparsegpt needs calibration data"):
        compute_masks(targets, cfg)


def test_conv_layers_without_blocks_are_calibrated_in_one_pass() -> None:
    torch.manual_seed(0)
    grouped = nn.Conv2d(8, 8, 3, groups=2)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), grouped, nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    cfg = SparseGPTPruning(sparsity=0.5, prune_classifier=True)
    x = torch.randn(16, 4, 8, 8)
    dense = grouped.weight.detach().clone()
    targets = plan_targets(model, cfg, x[:1]).targets
    result = calibrate(Calibration(model, {"x": x}, torch.device("cpu"), 8), targets, cfg)
    assert any("one pass" in n for n in result.notes)
    for name, mask in result.keep.items():
        rows = mask.reshape(mask.shape[0], -1)
        assert torch.all((~rows).sum(1) == round(0.5 * rows.shape[1])), name
    kept = result.keep["2.weight"]
    assert not torch.equal(grouped.weight[kept], dense[kept])  # SparseGPT updated the weights it kept
