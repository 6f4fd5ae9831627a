"""Issue 14, structural: advice that works, graphs that cannot be built explained, jobs that removed nothing say
so and miss a gate, attention and LSTM layers rebuilt from their widths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from prunekit.spec import JobSpec
from prunekit.spec.pruning import StructuralPruning
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import UnsupportedError
from worker.engine.models.builtin import DigitsCNN
from worker.engine.models.handle import LoadedModel
from worker.engine.strategies.structural import check_sidecar
from worker.engine.structural import prune_structurally, rebuild_from_widths


class _Mix(nn.Module):
    """A loose matrix parameter, outside any standard layer."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class _LooseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 8, 3, padding=1)
        self.mix = _Mix(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(torch.relu(self.stem(x))).mean(dim=(2, 3))
        return self.head(self.mix(h))


class _AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.ff = nn.Linear(16, 32)
        self.ff2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.ff2(torch.relu(self.ff(h)))
        return self.head(h.mean(dim=1))


class _LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 12)
        self.lstm = nn.LSTM(12, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.inp(x))[0][:, -1])


def test_excluding_the_module_of_a_loose_parameter_works() -> None:
    torch.manual_seed(0)
    model, x = _LooseNet().eval(), torch.randn(2, 3, 8, 8)
    with pytest.raises(UnsupportedError, match=r"exclude: \['mix'\]"):
        prune_structurally(model, StructuralPruning(), x)
    with pytest.warns(UserWarning):  # torch-pruning notes the unwrapped parameter; it is kept whole
        result = prune_structurally(model, StructuralPruning(exclude=["mix"]), x)
    pruned = result.module
    assert torch.equal(pruned.mix.w, model.mix.w)  # following the advice: kept whole
    assert pruned.conv.out_channels == 8  # coupled to it, so kept too
    assert pruned.stem.out_channels == 8  # the rest is pruned
    assert pruned(x).shape == (2, 4)


def test_shufflenet_channel_shuffle_is_a_clear_error() -> None:
    model = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10).eval()
    with pytest.raises(UnsupportedError) as err:
        prune_structurally(model, StructuralPruning(), torch.randn(1, 3, 64, 64))
    message = err.value.message
    assert "channel shuffle" in message and "mask-based" in message and "division" not in message


@pytest.mark.parametrize(("builder", "shape"), [(_AttentionNet, (2, 5, 6)), (_LSTMNet, (2, 5, 6))])
def test_attention_and_lstm_rebuild_from_widths(builder: type[nn.Module], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model, x = builder().eval(), torch.randn(shape)
    exclude = ["lstm"] if builder is _LSTMNet else []  # torch-pruning 1.6 cannot remove LSTM hidden units
    result = prune_structurally(model, StructuralPruning(channel_sparsity=0.5, exclude=exclude), x)
    assert result.params_after < result.params_before
    widths = json.loads(json.dumps(result.widths))
    rebuilt = rebuild_from_widths(builder, widths)
    rebuilt.load_state_dict(result.module.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), result.module(x))


def test_lstm_excluded_removes_nothing() -> None:
    class Only(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 16, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(x)[0][:, -1])

    result = prune_structurally(Only().eval(), StructuralPruning(exclude=["lstm"]), torch.randn(2, 5, 6))
    assert result.widths == {} and result.params_after == result.params_before


def test_sidecar_that_cannot_rebuild_is_refused() -> None:
    model = LoadedModel(module=DigitsCNN().eval(), format="state_dict", architecture="prunekit/digits_cnn")
    assert check_sidecar(model, {}, torch.randn(1, 1, 8, 8)) is None
    problem = check_sidecar(model, {"features.0": {"out_channels": 3}}, torch.randn(1, 1, 8, 8))
    assert problem is not None and problem.startswith("fails")


def test_structural_job_that_removed_nothing_misses_its_gate(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "digits.safetensors"
    save_file(DigitsCNN().state_dict(), str(weights))
    spec = JobSpec.model_validate(
        {
            "model": {"architecture": "prunekit/digits_cnn", "input_shape": [1, 8, 8]},
            "pruning": {"method": "structural", "exclude": ["features.*", "classifier.*"]},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )
    report = run_job(JobInputs(weights, spec), tmp_path / "out", isolate=False).report
    assert report.status == "gate_missed"
    gate = next(g for g in report.gates if g.name == "channels_removed")
    assert not gate.passed and gate.value == 0.0
    assert any("removed nothing" in n for n in report.notes)
