"""Models that take token ids (issue 10): embedding + LSTM / GRU / attention, BERT- and GPT-2-style, every format.

Each runs a compress job in-process at 50% magnitude with integer token-id data (where the model is a classifier),
and its artifact must load with plain PyTorch and give the logits the engine's re-evaluation computes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from prunekit.spec import JobSpec
from prunekit.spec.report import Report
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import EngineError, InvalidDataError, InvalidSpecError
from worker.engine.evaluation.metrics import predict_logits
from worker.engine.models.builtin import TokenClassifier
from worker.engine.models.calling import call_model
from worker.engine.models.loading import load_model

VOCAB, SEQ, CLASSES, N_TRAIN, N_VAL = 100, 12, 3, 48, 16
CPU = torch.device("cpu")
IDS = {"name": "input_ids", "shape": [SEQ], "dtype": "int64", "high": VOCAB}


def _ids_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """Random token ids [N, SEQ] and labels from the first token (learnable), always the same."""
    ids = np.random.default_rng(0).integers(0, VOCAB, (N_TRAIN + N_VAL, SEQ), dtype=np.int64)
    return ids, ids[:, 0] % CLASSES


def _val_ids() -> torch.Tensor:
    return torch.from_numpy(_ids_and_labels()[0][N_TRAIN:])


def _token_npz(path: Path, *, names: tuple[str, ...] = ("input_ids",), float_ids: bool = False) -> Path:
    """Token ids and labels, split given; every named input gets x_train_<name> / x_val_<name>."""
    ids, y = _ids_and_labels()
    arrays: dict[str, np.ndarray] = {"y_train": y[:N_TRAIN], "y_val": y[N_TRAIN:]}
    for name in names:
        values = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}.get(name, ids)
        values = values.astype(np.float32) if float_ids else values
        arrays[f"x_train_{name}"], arrays[f"x_val_{name}"] = values[:N_TRAIN], values[N_TRAIN:]
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _spec(model: dict[str, Any], epochs: int = 1) -> JobSpec:
    return JobSpec.model_validate(
        {
            "model": model,
            "pruning": {"method": "magnitude", "sparsity": 0.5},
            "finetune": {"epochs": epochs, "batch_size": 16},
            "evaluation": {"latency": {"repeats": 3, "warmup": 1}},
        }
    )


def _save(module: torch.nn.Module, fmt: str, path: Path, example: tuple[torch.Tensor, ...], grad: bool = True) -> Path:
    """The model as a user uploads it: traced TorchScript, a torch.export program, or a safetensors state-dict.

    Under torch.no_grad (grad=False), attention is recorded as its fused inference kernel, which has no gradient.
    """
    module.eval()
    with torch.set_grad_enabled(grad):
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, example, check_trace=False, strict=False), str(path))
        elif fmt == "export":
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(module, example, dynamic_shapes=tuple({0: batch} for _ in example))
            torch.export.save(program, str(path))
        else:
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def _plain(path: Path, fmt: str, build: Any = None) -> torch.nn.Module:
    """The artifact loaded with plain PyTorch, as a user without prunekit would."""
    if fmt == "torchscript":
        return torch.jit.load(str(path)).eval()
    if fmt == "export":
        return torch.export.load(str(path)).module()
    model = build()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def _check_report(report: Report, labelled: bool) -> None:
    assert report.size_before.flops_dense and report.size_before.flops_dense > 0
    assert report.size_after.flops_effective is not None and report.size_after.flops_effective > 0
    assert report.latency_before is not None and report.latency_after is not None
    assert report.latency_after.median_ms > 0
    assert abs(report.sparsity.global_sparsity - 0.5) < 0.02
    assert (report.after is not None) == labelled


def _same_logits(artifact: Path, fmt: str, data: dict[str, torch.Tensor], report: Report, build: Any = None) -> None:
    """Plain PyTorch gives the logits (and val accuracy) the engine's re-evaluation of the artifact gives."""
    plain = _plain(artifact, fmt, build)
    with torch.no_grad():
        ours = call_model(plain, data)
    engine = predict_logits(load_model(artifact, _spec_of(report, fmt)).module, data, 256, CPU)
    torch.testing.assert_close(ours.float(), engine, rtol=1e-4, atol=1e-5)
    if report.after is not None:
        y = torch.from_numpy(_ids_and_labels()[1][N_TRAIN:])
        assert report.after.val.accuracy == pytest.approx(float((ours.argmax(1) == y).float().mean()))


def _spec_of(report: Report, fmt: str) -> Any:
    from prunekit.spec import ModelSpec

    model = report.spec["model"]
    extra = {"architecture": model["architecture"], "kwargs": model["kwargs"]} if fmt == "state_dict" else {}
    return ModelSpec(format=fmt, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoder", ["lstm", "gru", "attention"])
@pytest.mark.parametrize("fmt", ["torchscript", "export", "state_dict"])
def test_embedding_classifiers_compress_in_every_format(encoder: str, fmt: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs = {"vocab_size": VOCAB, "num_classes": CLASSES}
    module = TokenClassifier(encoder=encoder, **kwargs)
    path = _save(module, fmt, tmp_path / f"model.{fmt}", (torch.randint(0, VOCAB, (2, SEQ)),))
    model: dict[str, Any] = {"inputs": [IDS]}
    if fmt == "state_dict":
        model.update(architecture=f"prunekit/embedding_{encoder}", kwargs=kwargs)
    out = run_job(JobInputs(path, _spec(model), _token_npz(tmp_path / "d.npz")), tmp_path / "out", isolate=False)
    _check_report(out.report, labelled=True)
    assert out.artifact_path is not None
    build = lambda: TokenClassifier(encoder=encoder, **kwargs)  # noqa: E731
    _same_logits(out.artifact_path, fmt, {"input_ids": _val_ids()}, out.report, build)


def test_token_ids_without_a_spec_stay_integers(tmp_path: Path) -> None:
    """Integer x with neither inputs nor input_shape: fed as int64, not cast to float."""
    path = _save(
        TokenClassifier(vocab_size=VOCAB, num_classes=CLASSES), "torchscript", tmp_path / "m.pt", (_val_ids(),)
    )
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, (40, SEQ), dtype=np.int64)
    np.savez(tmp_path / "d.npz", x_train=ids, y_train=ids[:, 0] % CLASSES)
    report = run_job(JobInputs(path, _spec({}, epochs=0), tmp_path / "d.npz"), tmp_path / "out", isolate=False).report
    assert report.after is not None and report.size_after.flops_dense


def test_float_data_for_an_int_input_is_invalid_data(tmp_path: Path) -> None:
    path = _save(
        TokenClassifier(vocab_size=VOCAB, num_classes=CLASSES), "torchscript", tmp_path / "m.pt", (_val_ids(),)
    )
    data = _token_npz(tmp_path / "d.npz", float_ids=True)
    with pytest.raises(InvalidDataError, match=r"x_train holds float32 values but model input 'input_ids' is int64"):
        run_job(JobInputs(path, _spec({"inputs": [IDS]}), data), tmp_path / "out", isolate=False)


def test_float_input_for_an_embedding_model_is_a_spec_error(tmp_path: Path) -> None:
    """input_shape declares a float input; the embedding refuses it: invalid_spec, not an internal error."""
    path = _save(
        TokenClassifier(vocab_size=VOCAB, num_classes=CLASSES), "torchscript", tmp_path / "m.pt", (_val_ids(),)
    )
    with pytest.raises(InvalidSpecError, match=r"cannot run on a sample of the spec's inputs \(x: float32 \[1, 12\]\)"):
        run_job(JobInputs(path, _spec({"input_shape": [SEQ]}, epochs=0)), tmp_path / "out", isolate=False)


def test_ids_past_the_vocabulary_are_invalid_data(tmp_path: Path) -> None:
    path = _save(
        TokenClassifier(vocab_size=VOCAB, num_classes=CLASSES), "torchscript", tmp_path / "m.pt", (_val_ids(),)
    )
    spec = _spec({"inputs": [{**IDS, "high": 50}]})
    with pytest.raises(InvalidDataError, match=r"takes \[0, 50\)"):
        run_job(JobInputs(path, spec, _token_npz(tmp_path / "d.npz")), tmp_path / "out", isolate=False)


def test_flattened_data_for_a_cnn_is_invalid_data_without_paths(torchscript_model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x_train=rng.random((30, 64), dtype=np.float32), y_train=np.arange(30) % 10)
    with pytest.raises(InvalidDataError) as caught:
        run_job(JobInputs(torchscript_model, _spec({}), tmp_path / "flat.npz"), tmp_path / "out", isolate=False)
    message = caught.value.message
    assert "x: float32 [1, 64]" in message and "conv2d" in message, message
    assert not re.search(r"/\w+/", message), message  # no server paths
    assert isinstance(caught.value, EngineError) and caught.value.code == "invalid_data"


# --- Hugging Face models, built from configs with random weights (nothing is downloaded) ----------------------------

MASK = {"name": "attention_mask", "shape": [SEQ], "dtype": "int64"}
SEGMENTS = {"name": "token_type_ids", "shape": [SEQ], "dtype": "int64"}


def _bert(torchscript: bool = True) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=CLASSES,
        torchscript=torchscript,  # tuple outputs, as Hugging Face recommends for tracing and export
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


def _bert_val() -> dict[str, torch.Tensor]:
    ids = _val_ids()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_bert_classifier_with_three_inputs(fmt: str, tmp_path: Path) -> None:
    """Data gives input_ids only: attention_mask defaults to ones, token_type_ids to zeros."""
    module = _bert()
    path = _save(module, fmt, tmp_path / f"bert.{fmt}", tuple(v[:2] for v in _bert_val().values()))
    spec = _spec({"inputs": [IDS, MASK, SEGMENTS]})
    out = run_job(JobInputs(path, spec, _token_npz(tmp_path / "d.npz")), tmp_path / "out", isolate=False)
    _check_report(out.report, labelled=True)
    assert out.artifact_path is not None
    _same_logits(out.artifact_path, fmt, _bert_val(), out.report)


def test_bert_state_dict_is_called_by_keyword(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An eager Hugging Face model (registered architecture): keyword inputs in any order, ModelOutput read."""
    from worker.engine.models.builtin import ARCHITECTURES

    monkeypatch.setitem(ARCHITECTURES, "tiny_bert", lambda: _bert(torchscript=False))
    path = _save(_bert(torchscript=False), "state_dict", tmp_path / "bert.safetensors", ())
    model = {"inputs": [SEGMENTS, IDS, MASK], "architecture": "prunekit/tiny_bert"}  # not the forward's order
    data = _token_npz(tmp_path / "d.npz", names=("token_type_ids", "input_ids", "attention_mask"))
    out = run_job(JobInputs(path, _spec(model), data), tmp_path / "out", isolate=False)
    _check_report(out.report, labelled=True)
    assert out.artifact_path is not None
    val = {k: _bert_val()[k] for k in ("token_type_ids", "input_ids", "attention_mask")}
    _same_logits(out.artifact_path, "state_dict", val, out.report, lambda: _bert(torchscript=False))


def test_eager_hugging_face_model_is_traced_and_exported_by_keyword(tmp_path: Path) -> None:
    from worker.engine.models.handle import LoadedModel
    from worker.engine.models.saving import save_model

    module = _bert(torchscript=False)
    sample = {k: v[:1] for k, v in reversed(_bert_val().items())}  # not the forward's order
    reference = call_model(module, _bert_val())
    for fmt in ("torchscript", "export"):
        saved = save_model(LoadedModel(module, "state_dict"), tmp_path / fmt, fmt, sample)  # type: ignore[arg-type]
        with torch.no_grad():
            got = call_model(_plain(saved, fmt), _bert_val())
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)


def _gpt2(fmt: str, path: Path, layers: int = 2) -> Path:
    """A GPT-2-style causal LM (logits [batch, seq, vocab]) saved as a user would (transformers 5: 4.57 cannot
    trace or export GPT-2 under torch 2.14, it fails inside its own mask building)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=2, n_positions=64, use_cache=False, torchscript=True
    )
    torch.manual_seed(0)
    return _save(transformers.GPT2LMHeadModel(config), fmt, path, (_val_ids()[:2],))


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_gpt2_causal_lm_without_data(fmt: str, tmp_path: Path) -> None:
    """Logits [batch, seq, vocab] cannot be scored as classes yet: pruned and measured (latency, FLOPs) only."""
    path = _gpt2(fmt, tmp_path / f"gpt2.{fmt}")
    out = run_job(JobInputs(path, _spec({"inputs": [IDS]}, epochs=0)), tmp_path / "out", isolate=False)
    _check_report(out.report, labelled=False)
    assert out.artifact_path is not None
    ids = {"input_ids": _val_ids()}
    with torch.no_grad():
        plain = call_model(_plain(out.artifact_path, fmt), ids)
        engine = call_model(load_model(out.artifact_path, _spec_of(out.report, fmt)).module, ids)
    assert plain.shape == (N_VAL, SEQ, VOCAB)
    torch.testing.assert_close(plain, engine)


def test_causal_lm_with_data_but_no_task_names_the_task_to_set(tmp_path: Path) -> None:
    path = _gpt2("export", tmp_path / "gpt2.pt2", layers=1)
    data = _token_npz(tmp_path / "d.npz")
    with pytest.raises(EngineError, match=r"returns \[1, 12, 100\]: set model.task to causal_lm") as caught:
        run_job(JobInputs(path, _spec({"inputs": [IDS]}), data), tmp_path / "o", isolate=False)
    assert caught.value.code == "unsupported"


def test_causal_lm_task_on_an_export_program_reports_perplexity(tmp_path: Path) -> None:
    path = _gpt2("export", tmp_path / "gpt2.pt2", layers=1)
    ids, _ = _ids_and_labels()
    np.savez(tmp_path / "ids.npz", x=ids)  # token ids only: the targets are the next tokens
    spec = _spec({"inputs": [IDS], "task": "causal_lm"})
    report = run_job(JobInputs(path, spec, tmp_path / "ids.npz"), tmp_path / "o", isolate=False).report
    assert report.before is not None and report.after is not None
    n_val = round((N_TRAIN + N_VAL) * 0.2)  # the seeded split of unlabelled rows
    assert report.after.val.perplexity is not None and report.after.val.tokens == n_val * (SEQ - 1)


def test_attention_traced_under_no_grad_cannot_be_fine_tuned_but_can_be_pruned(tmp_path: Path) -> None:
    module = TokenClassifier(vocab_size=VOCAB, num_classes=CLASSES, encoder="attention")
    path = _save(module, "torchscript", tmp_path / "m.pt", (_val_ids()[:2],), grad=False)
    data = _token_npz(tmp_path / "d.npz")
    with pytest.raises(EngineError, match="_native_multi_head_attention, an inference-only kernel") as caught:
        run_job(JobInputs(path, _spec({"inputs": [IDS]}), data), tmp_path / "a", isolate=False)
    assert caught.value.code == "unsupported"
    report = run_job(JobInputs(path, _spec({"inputs": [IDS]}, epochs=0), data), tmp_path / "b", isolate=False).report
    _check_report(report, labelled=True)


# --- data arrays for named inputs ------------------------------------------------------------------------------------


def _inputs(*names: str) -> list[Any]:
    from prunekit.spec.job import InputSpec

    return [InputSpec(name=n, shape=[SEQ], dtype="int64") for n in names]


def test_named_arrays_follow_the_seeded_split(tmp_path: Path) -> None:
    from prunekit.spec import DataSpec
    from worker.engine.data import load_dataset

    ids, y = _ids_and_labels()
    np.savez(tmp_path / "d.npz", x_train_input_ids=ids, x_train_token_type_ids=ids + 1000, y_train=y)
    ds = load_dataset(tmp_path / "d.npz", DataSpec(max_train_samples=20), _inputs("input_ids", "token_type_ids"))
    train, val = ds.train_inputs(), ds.val_inputs()
    assert list(train) == ["input_ids", "token_type_ids"] and ds.input_name == "input_ids"
    assert len(train["input_ids"]) == 20 and train["input_ids"].dtype == torch.int64
    assert torch.equal(train["token_type_ids"], train["input_ids"] + 1000)
    assert torch.equal(val["token_type_ids"], val["input_ids"] + 1000)


def test_left_out_mask_defaults_to_ones(tmp_path: Path) -> None:
    from prunekit.spec import DataSpec
    from worker.engine.data import load_dataset

    ds = load_dataset(_token_npz(tmp_path / "d.npz"), DataSpec(), _inputs("input_ids", "attention_mask"))
    assert bool((ds.val_inputs()["attention_mask"] == 1).all()) and len(ds.extra_train["attention_mask"]) == N_TRAIN


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": "ids", "x_train_input_ids": "ids"}, "both 'x_train' and 'x_train_input_ids'"),
        ({"x_train": "ids"}, "no 'x_train_segment' for model input 'segment'"),
        ({"x_train": "ids", "x_train_segment": "ids", "x_val_segment": "ids"}, r"unexpected keys \['x_val_segment'\]"),
        ({"x_train": "ids", "x_train_segment": "short"}, "x_train_segment has 10 rows but the first input's array has"),
    ],
)
def test_bad_named_arrays(tmp_path: Path, arrays: dict[str, str], message: str) -> None:
    from prunekit.spec import DataSpec
    from worker.engine.data import load_dataset

    ids, y = _ids_and_labels()
    values = {"ids": ids, "short": ids[:10]}
    np.savez(tmp_path / "d.npz", y_train=y, **{k: values[v] for k, v in arrays.items()})  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError, match=message):
        load_dataset(tmp_path / "d.npz", DataSpec(), _inputs("input_ids", "segment"))


def test_spec_inputs_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not both"):
        JobSpec.model_validate({"model": {"input_shape": [SEQ], "inputs": [IDS]}})
    with pytest.raises(ValidationError, match="unique"):
        JobSpec.model_validate({"model": {"inputs": [IDS, IDS]}})
    with pytest.raises(ValidationError, match="int64/int32 inputs only"):
        JobSpec.model_validate({"model": {"inputs": [{"name": "x", "shape": [3], "high": 4}]}})
    assert JobSpec.model_validate({"model": {"input_shape": [3]}}).model.input_specs()[0].name == "x"  # type: ignore[index]
