"""Structural pruning: real channel removal, coupling, targets, refusals and rebuilding from widths."""

from __future__ import annotations

import copy
import json
import typing

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
import torchvision
from torch import nn

from prunekit.spec.pruning import StructuralPruning
from tests.worker.engine.structural.conftest import MODELS, ConcatIntoGroupedNet, make_model, masked_copy
from worker.engine.errors import InvalidModelError, InvalidSpecError, UnsupportedError
from worker.engine.models.builtin import DigitsCNN, TinyResNet
from worker.engine.structural import IMPORTANCES, prune_structurally, rebuild_from_widths


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_removed_channels_reduce_parameters(name: str) -> None:
    model, x = make_model(name)
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.5), x)
    pruned = result.module
    assert result.params_before == _n_params(model)
    assert result.params_after == _n_params(pruned)
    assert _n_params(pruned) < 0.5 * _n_params(model)
    assert result.macs_after < 0.5 * result.macs_before
    # Every conv except ones whose width the output fixes lost channels, and the widths say so.
    before = dict(model.named_modules())
    for mod_name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[0] == m.out_channels
            assert m.out_channels < before[mod_name].out_channels
            assert result.widths[mod_name]["out_channels"] == m.out_channels
    assert pruned(x).shape == model(x).shape


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pruned_outputs_match_masked_model(name: str) -> None:
    # float64 so the only difference left is summation order (removed channel vs added 0.0): ~1e-15.
    model, x = make_model(name)
    model, x = model.double(), x.double()
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.4), x)
    assert result.steps == 1 and result.history
    masked = masked_copy(model, result.history, x)
    with torch.no_grad():
        expected, got, unmasked = masked(x), result.module(x), model(x)
    assert (expected - got).abs().max().item() < 1e-10
    # The comparison has teeth: the original (unmasked) model does give different outputs.
    assert (unmasked - got).abs().max().item() > 1e-3


def test_residual_and_depthwise_coupling() -> None:
    model, x = make_model("tiny_resnet")
    pruned = prune_structurally(model, StructuralPruning(channel_sparsity=0.5), x).module
    assert isinstance(pruned, TinyResNet)
    stem, block, dw, pw = pruned.stem[0], pruned.block, pruned.separable[0], pruned.separable[3]
    # The skip add couples the stem, block.conv2 and the depthwise conv; the depthwise conv stays depthwise.
    width = stem.out_channels
    assert width < 16
    assert block.conv1.in_channels == block.conv2.out_channels == block.bn2.num_features == width
    assert dw.in_channels == dw.out_channels == dw.groups == width
    assert pw.in_channels == width and pw.out_channels < 32
    assert pruned.fc.in_features == pw.out_channels and pruned.fc.out_features == 10
    for batch in (1, 5):
        assert pruned(torch.randn(batch, 1, 8, 8)).shape == (batch, 10)


def test_input_model_is_left_unchanged() -> None:
    model, x = make_model("tiny_resnet")
    state = copy.deepcopy(model.state_dict())
    prune_structurally(model, StructuralPruning(channel_sparsity=0.5), x)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("name", "target"), [("tiny_resnet", 2.0), ("digits_cnn", 3.0), ("resnet18", 2.5)])
def test_macs_budget_reaches_target(name: str, target: float) -> None:
    if name == "resnet18":
        torch.manual_seed(0)
        model, x = torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 64, 64)
    else:
        model, x = make_model(name)
    result = prune_structurally(model, StructuralPruning(target_macs_reduction=target), x)
    macs, params = tp.utils.count_ops_and_params(result.module, x)  # independent recount
    assert (round(macs), round(params)) == (result.macs_after, result.params_after)
    assert result.macs_before / macs >= target
    assert result.macs_before / macs < target * 1.3  # reached, not wildly overshot


def test_latency_budget_uses_latency_fn() -> None:
    model, x = make_model("tiny_resnet")
    calls: list[int] = []

    def fake_latency(m: nn.Module) -> float:  # deterministic stand-in: latency proportional to parameters
        calls.append(1)
        return float(_n_params(m))

    result = prune_structurally(model, StructuralPruning(target_speedup=2.0), x, latency_fn=fake_latency)
    assert result.latency_before is not None and result.latency_after is not None
    assert result.latency_before / result.latency_after >= 2.0
    assert result.latency_after == _n_params(result.module)
    assert len(calls) == result.steps + 1


def test_unreachable_budget_is_a_clear_error() -> None:
    model, x = make_model("digits_cnn")
    cfg = StructuralPruning(target_macs_reduction=50.0, exclude=["features.0"])
    with pytest.raises(InvalidSpecError, match="could not reach a 50x MACs reduction"):
        prune_structurally(model, cfg, x)


def test_exclude_and_classifier_are_kept() -> None:
    model, x = make_model("digits_cnn")
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.5, exclude=["features.3"]), x)
    pruned = result.module
    assert isinstance(pruned, DigitsCNN)
    assert pruned.features[3].out_channels == 32  # excluded
    assert pruned.features[0].out_channels == 8  # not excluded: half removed
    assert pruned.classifier[1].out_features == 32  # hidden linear pruned
    assert pruned.classifier[4].out_features == 10  # final classifier kept
    with pytest.raises(InvalidSpecError, match="matches no module"):
        prune_structurally(model, StructuralPruning(exclude=["feature.*"]), x)
    with pytest.raises(InvalidSpecError, match="prune_classifier"):
        prune_structurally(model, StructuralPruning(prune_classifier=True), x)


def test_round_to_iterative_and_global_ranking() -> None:
    model, x = make_model("concat_grouped")
    cfg = StructuralPruning(channel_sparsity=0.5, round_to=4, iterative_steps=3, global_ranking=True)
    result = prune_structurally(model, cfg, x)
    assert result.steps == 3
    convs = [m for m in result.module.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 4 == 0 for c in convs)
    assert result.macs_after < result.macs_before
    assert result.module(torch.randn(3, 3, 8, 8)).shape == (3, 5)


# --- criteria -------------------------------------------------------------------------------------


def test_registry_covers_every_spec_choice() -> None:
    choices = typing.get_args(StructuralPruning.model_fields["importance"].annotation)
    assert set(IMPORTANCES) == set(choices)
    for key, cls in IMPORTANCES.items():
        assert cls.name == key


def _digits_with_special_channels() -> tuple[nn.Module, torch.Tensor, list[int]]:
    """Digits CNN whose first-conv channels 0..3 have the LARGEST weights; tests then make them useless."""
    model, x = make_model("digits_cnn")
    special = [0, 1, 2, 3]
    with torch.no_grad():
        model.features[0].weight[special] *= 20
    return model, x, special


def _removed_first_conv_channels(result_history: list[list]) -> set[int]:
    return {i for name, is_out, idxs in result_history if name == "features.0" and is_out for i in idxs}


def test_magnitude_removes_small_weights_and_keeps_large_ones() -> None:
    model, x, special = _digits_with_special_channels()
    with torch.no_grad():
        model.features[0].weight[[10, 11]] *= 1e-3
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.5, norm="l1"), x)
    removed = _removed_first_conv_channels(result.history)
    assert {10, 11} <= removed
    assert not removed & set(special)


def test_bn_scale_uses_the_batchnorm_gamma() -> None:
    model, x, special = _digits_with_special_channels()
    with torch.no_grad():
        model.features[1].weight[special] = 1e-4  # tiny gamma: network slimming says remove
    removed_bn = _removed_first_conv_channels(
        prune_structurally(model, StructuralPruning(channel_sparsity=0.5, importance="bn_scale"), x).history
    )
    removed_mag = _removed_first_conv_channels(
        prune_structurally(model, StructuralPruning(channel_sparsity=0.5), x).history
    )
    assert set(special) <= removed_bn
    assert not set(special) & removed_mag


def test_bn_scale_without_batchnorm_is_rejected() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    with pytest.raises(InvalidSpecError, match="BatchNorm"):
        prune_structurally(model, StructuralPruning(importance="bn_scale"), torch.randn(1, 1, 8, 8))


def test_taylor_uses_gradients_from_data() -> None:
    model, x, special = _digits_with_special_channels()
    with torch.no_grad():
        model.features[1].bias[special] = -100.0  # ReLU kills these channels: zero gradient, zero Taylor score
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    seen: list[int] = []

    def data_fn(m: nn.Module) -> None:
        for xb, yb in batches:
            F.cross_entropy(m(xb), yb).backward()
            seen.append(len(xb))

    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.5, importance="taylor"), x, data_fn=data_fn)
    assert seen == [8, 8, 8]
    assert set(special) <= _removed_first_conv_channels(result.history)
    assert all(p.grad is None for p in result.module.parameters())  # no gradient memory left behind
    assert {n: p.requires_grad for n, p in result.module.named_parameters()} == requires_grad
    with pytest.raises(InvalidSpecError, match="needs data"):
        prune_structurally(model, StructuralPruning(importance="taylor"), x)


# --- refusals -------------------------------------------------------------------------------------


def test_torchscript_input_is_unsupported() -> None:
    model, x = make_model("digits_cnn")
    with pytest.raises(UnsupportedError, match="TorchScript"):
        prune_structurally(torch.jit.script(model), StructuralPruning(), x)
    with pytest.raises(UnsupportedError, match="TorchScript"):
        prune_structurally(torch.jit.trace(model, x), StructuralPruning(), x)


def test_exported_program_is_unsupported(tmp_path: typing.Any) -> None:
    model, x = make_model("digits_cnn")
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "m.pt2"))
    program = torch.export.load(str(tmp_path / "m.pt2"))
    for candidate in (program, program.module()):
        with pytest.raises(UnsupportedError, match=r"\.pt2"):
            prune_structurally(candidate, StructuralPruning(), x)  # type: ignore[arg-type]


class _HardCodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.fc(x.reshape(x.shape[0], 512))  # 512 = 8 channels x 64: breaks once channels go


def test_hard_coded_width_names_the_failure() -> None:
    with pytest.raises(UnsupportedError, match="fails in") as info:
        prune_structurally(_HardCodedView().eval(), StructuralPruning(), torch.randn(2, 1, 8, 8))
    assert "fixed in forward()" in info.value.message


class _FunctionalConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(8, 1, 3, 3))
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.conv2d(x, self.kernel).mean(dim=(2, 3)))


def test_unresolvable_coupling_names_the_layers() -> None:
    model = ConcatIntoGroupedNet().eval()
    with pytest.raises(UnsupportedError, match="could not remove channels from layer 'grouped'") as info:
        prune_structurally(model, StructuralPruning(), torch.randn(1, 3, 8, 8))
    assert "exclude" in info.value.message
    # Following the advice (exclude the layers feeding it) works.
    result = prune_structurally(model, StructuralPruning(exclude=["left", "right"]), torch.randn(1, 3, 8, 8))
    assert result.module.grouped.out_channels == 12


def test_loose_matrix_parameter_is_named() -> None:
    with pytest.raises(UnsupportedError, match="'kernel'"):
        prune_structurally(_FunctionalConv(), StructuralPruning(), torch.randn(1, 1, 8, 8))


# --- rebuilding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits_cnn", "tiny_resnet", "resnet18"])
def test_rebuild_from_widths_reloads_state_dict(name: str) -> None:
    if name == "resnet18":
        torch.manual_seed(0)
        builder = lambda: torchvision.models.resnet18(weights=None)  # noqa: E731
        model, x = builder().eval(), torch.randn(1, 3, 64, 64)
    else:
        builder = MODELS[name][0]
        model, x = make_model(name)
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.5), x)
    widths = json.loads(json.dumps(result.widths))  # what gets saved next to the state dict
    rebuilt = rebuild_from_widths(builder, widths)
    rebuilt.load_state_dict(result.module.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.module(x))
    # Without the widths the pruned state dict does not fit the architecture.
    with pytest.raises(RuntimeError, match="size mismatch"):
        builder().load_state_dict(result.module.state_dict())


def test_rebuild_rejects_widths_of_another_architecture() -> None:
    with pytest.raises(InvalidModelError, match="does not have"):
        rebuild_from_widths(DigitsCNN, {"layer9.conv": {"out_channels": 3}})
    with pytest.raises(InvalidModelError, match="unknown keys"):
        rebuild_from_widths(DigitsCNN, {"features.0": {"out_features": 3}})
