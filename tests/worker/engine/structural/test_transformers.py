"""transformer_structural (issue 13): heads, MLP channels, hidden size and blocks removed from GPT-2, a Llama with
grouped-query attention and BERT; the rewritten config.json reloads with plain ``from_pretrained``.

Head and channel removal is checked against the original with the removed heads' / channels' inputs to the
output projection zeroed, which must give the same outputs; every artifact is reloaded with transformers alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from prunekit.reporting import render_markdown, render_report_html
from prunekit.spec import JobSpec
from prunekit.spec.pruning import TransformerStructuralPruning
from prunekit.spec.report import Report
from tests.worker.engine.huggingface import builders
from worker.engine.api import JobInputs, run_job
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.progress import ProgressEvent
from worker.engine.transformer_structural import (
    activation_scores,
    apply_selection,
    family_of,
    legal_head_ratios,
    params_of,
    plan_widths,
    select,
    widths_of,
)

IDS = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0))


def _gpt2() -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=300, n_positions=64, use_cache=False)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _llama(folder: Path | None = None) -> transformers.PreTrainedModel:
    """8 query heads sharing 2 key/value heads (groups of 4), tied embeddings."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, use_cache=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg).eval()
    if folder is not None:
        model.save_pretrained(folder)
        builders.tokenizer().save_pretrained(folder)
    return model


def _bert() -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=64, num_labels=3)  # fmt: skip
    return transformers.BertForSequenceClassification(cfg).eval()


def _prune(model: Any, task: str, **ratios: Any) -> Any:
    """Score on IDS, remove in place; the selection made."""
    cfg = TransformerStructuralPruning(**ratios)
    family, before = family_of(model.config), widths_of(model.config)
    after = plan_widths(model.config, cfg, task)
    scores = activation_scores(family, model, before, [{"input_ids": IDS[:2]}, {"input_ids": IDS[2:]}], "cpu")
    selection = select(scores, before, after)
    apply_selection(model, selection)
    return selection


def _out(model: Any) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=IDS)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _reloaded(model: Any, auto: Any, folder: Path) -> Any:
    model.save_pretrained(folder)
    return auto.from_pretrained(folder).eval()


def _zero_inputs(module: torch.nn.Module, keep: list[int], width: int, conv1d: bool = False) -> None:
    """Zero the inputs of an output projection that `keep` does not name (what removing them must equal)."""
    drop = torch.tensor(sorted(set(range(width)) - set(keep)))
    with torch.no_grad():
        if conv1d:
            module.weight[drop, :] = 0  # type: ignore[index]
        else:
            module.weight[:, drop] = 0  # type: ignore[index]


def _head_columns(heads: list[int], head_dim: int) -> list[int]:
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def test_gpt2_heads_and_mlp_equal_zeroing_them_and_reload_exactly(tmp_path: Path) -> None:
    model = _gpt2()
    reference = copy.deepcopy(model)
    # Heads are tied to hidden_size in GPT-2: removing heads alone is refused, so MLP only equals zeroing exactly.
    selection = _prune(model, "causal_lm", mlp=0.5)
    for i, block in enumerate(reference.transformer.h):
        _zero_inputs(block.mlp.c_proj, selection.mlp[i], 256, conv1d=True)
    assert torch.allclose(_out(model), _out(reference), atol=1e-5)
    reloaded = _reloaded(model, transformers.AutoModelForCausalLM, tmp_path / "m")
    assert reloaded.config.n_inner == 128
    assert torch.equal(_out(reloaded), _out(model))
    # MLP channels only: each block loses c_fc's columns and bias entries and c_proj's rows, nothing else.
    removed = 4 * (64 * 128 + 128 + 128 * 64)
    assert sum(p.numel() for p in reference.parameters()) - sum(p.numel() for p in reloaded.parameters()) == removed


def test_gpt2_half_width_and_a_quarter_of_the_blocks(tmp_path: Path) -> None:
    model = _gpt2()
    before = sum(p.numel() for p in model.parameters())
    selection = _prune(model, "causal_lm", attention_heads=0.5, hidden_size=0.5, mlp=0.5, layers=0.25)
    assert len(selection.kept_layers) == 3 and selection.hidden is not None and len(selection.hidden) == 32
    reloaded = _reloaded(model, transformers.AutoModelForCausalLM, tmp_path / "m")
    cfg = reloaded.config
    assert (cfg.n_head, cfg.n_embd, cfg.n_inner, cfg.n_layer) == (2, 32, 128, 3)
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight  # still tied
    assert torch.equal(_out(reloaded), _out(model))
    after = sum(p.numel() for p in reloaded.parameters())
    assert after == params_of(cfg, "causal_lm", widths_of(cfg)) and after < before / 3


def test_llama_gqa_whole_groups_equal_zeroing_their_query_heads(tmp_path: Path) -> None:
    model = _llama()
    reference = copy.deepcopy(model)
    selection = _prune(model, "causal_lm", attention_heads=0.5, gqa="groups", mlp=0.25)
    for i, block in enumerate(reference.model.layers):
        q, kv = selection.heads[i]
        assert len(kv) == 1 and q == [kv[0] * 4 + j for j in range(4)]  # one whole group of 4 query heads
        _zero_inputs(block.self_attn.o_proj, _head_columns(q, 8), 64)
        _zero_inputs(block.mlp.down_proj, selection.mlp[i], 128)
    assert torch.allclose(_out(model), _out(reference), atol=1e-5)
    reloaded = _reloaded(model, transformers.AutoModelForCausalLM, tmp_path / "m")
    cfg = reloaded.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size) == (4, 1, 8, 96)
    assert torch.equal(_out(reloaded), _out(model))


def test_llama_gqa_within_groups_keeps_every_key_value_head(tmp_path: Path) -> None:
    model = _llama()
    reference = copy.deepcopy(model)
    selection = _prune(model, "causal_lm", attention_heads=0.5, gqa="within_groups")
    for i, block in enumerate(reference.model.layers):
        q, kv = selection.heads[i]
        assert kv == [0, 1] and sum(h < 4 for h in q) == 2 and sum(h >= 4 for h in q) == 2  # 2 of each group
        _zero_inputs(block.self_attn.o_proj, _head_columns(q, 8), 64)
    assert torch.allclose(_out(model), _out(reference), atol=1e-5)
    reloaded = _reloaded(model, transformers.AutoModelForCausalLM, tmp_path / "m")
    assert (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (4, 2)
    assert torch.equal(_out(reloaded), _out(model))


def test_llama_hidden_size_and_depth(tmp_path: Path) -> None:
    model = _llama()
    _prune(model, "causal_lm", hidden_size=0.25, layers=0.5)
    reloaded = _reloaded(model, transformers.AutoModelForCausalLM, tmp_path / "m")
    assert (reloaded.config.hidden_size, reloaded.config.num_hidden_layers) == (48, 2)
    assert torch.equal(_out(reloaded), _out(model))


def test_bert_classifier_width_and_depth(tmp_path: Path) -> None:
    model = _bert()
    reference = copy.deepcopy(model)
    selection = _prune(model, "sequence_classification", mlp=0.5)
    for i, layer in enumerate(reference.bert.encoder.layer):
        _zero_inputs(layer.output.dense, selection.mlp[i], 128)
    assert torch.allclose(_out(model), _out(reference), atol=1e-5)
    _prune(model, "sequence_classification", attention_heads=0.5, hidden_size=0.5, layers=0.5)
    reloaded = _reloaded(model, transformers.AutoModelForSequenceClassification, tmp_path / "m")
    cfg = reloaded.config
    assert (cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (2, 32, 64, 2)
    assert reloaded.classifier.in_features == 32 and reloaded.bert.pooler.dense.weight.shape == (32, 32)
    assert torch.equal(_out(reloaded), _out(model))


def test_bert_encoder_keeps_its_output_width(tmp_path: Path) -> None:
    encoder = transformers.AutoModel.from_pretrained(builders.bert_encoder(tmp_path / "enc")).eval()
    with pytest.raises(InvalidSpecError, match="width of the embeddings this encoder outputs"):
        plan_widths(encoder.config, TransformerStructuralPruning(hidden_size=0.5, attention_heads=0.5),
                    "feature_extraction")  # fmt: skip
    _prune(encoder, "feature_extraction", mlp=0.5, layers=0.5)
    reloaded = _reloaded(encoder, transformers.AutoModel, tmp_path / "m")
    assert (reloaded.config.intermediate_size, reloaded.config.num_hidden_layers) == (32, 1)
    assert _out(reloaded).shape[-1] == 32 and torch.equal(_out(reloaded), _out(encoder))


@pytest.mark.parametrize(
    ("ratios", "named"),
    [
        ({"attention_heads": 0.25}, "legal attention_heads: 0.5 (4 heads, 1 key/value)"),  # 6 heads: no whole group
        ({"attention_heads": 0.25, "gqa": "within_groups"}, "0.5 (4 heads, 2 key/value), 0.75"),  # 64 % 6 != 0
        ({"layers": 0.9}, "legal layers: 0.25, 0.5, 0.75"),
        ({}, "nothing to remove"),
    ],
)
def test_illegal_llama_ratios_name_the_legal_ones(ratios: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidSpecError, match="transformer_structural") as caught:
        plan_widths(_llama().config, TransformerStructuralPruning(**ratios), "causal_lm")
    assert named in str(caught.value)


def test_gpt2_heads_without_hidden_size_are_refused_with_the_tied_ratios() -> None:
    with pytest.raises(InvalidSpecError, match="must be removed together") as caught:
        plan_widths(_gpt2().config, TransformerStructuralPruning(attention_heads=0.5), "causal_lm")
    assert "legal: 0.25 (3 heads" in str(caught.value)
    assert legal_head_ratios(_llama().config) == [0.5]
    assert legal_head_ratios(_llama().config, "within_groups") == [0.5, 0.75]


def test_other_model_types_are_refused_naming_the_supported_ones() -> None:
    config = transformers.T5Config(d_model=32, num_layers=1, num_heads=2, d_ff=64, vocab_size=300)
    with pytest.raises(UnsupportedError, match="gpt2, llama"):
        family_of(config)


# --- jobs -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("gpt2")
    return builders.archive(builders.gpt2(base / "tiny-gpt2"), base / "tiny-gpt2.tar.gz")


@pytest.fixture(scope="module")
def lm_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.text_jsonl(tmp_path_factory.mktemp("text") / "train.jsonl")


def _spec(pruning: dict[str, Any], epochs: int = 0, extra: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.model_validate(
        {
            "pruning": {"method": "transformer_structural", **pruning},
            "finetune": {"epochs": epochs, "batch_size": 8, "optimizer": {"lr": 3e-3}},
            "data": {"seq_len": builders.SEQ, "calibration_samples": 16},
            "evaluation": {"batch_size": 16, "latency": {"repeats": 3, "warmup": 1, "batch_size": 8}},
            **(extra or {}),
        }
    )


def _run(spec: JobSpec, model: Path, data: Path | None, out: Path, stages: list[str] | None = None) -> Report:
    def on_progress(event: ProgressEvent) -> None:
        if stages is not None:
            stages.append(event.stage)

    outputs = run_job(JobInputs(spec=spec, model_path=model, data_path=data), out, on_progress, isolate=False)
    return Report.model_validate_json(outputs.report_path.read_text())


def test_illegal_ratio_is_refused_in_the_load_stage(tmp_path: Path) -> None:
    _llama(tmp_path / "llama")
    archive = builders.archive(tmp_path / "llama", tmp_path / "llama.tar.gz")
    stages: list[str] = []
    with pytest.raises(InvalidSpecError, match=r"legal attention_heads: 0\.5"):
        _run(_spec({"attention_heads": 0.25}), archive, None, tmp_path / "out", stages)
    assert stages and set(stages) == {"load"}  # nothing measured, scored or pruned


def test_gpt2_job_distils_and_reports_before_and_after_recovery(
    gpt2_archive: Path, lm_text: Path, tmp_path: Path
) -> None:
    spec = _spec({"attention_heads": 0.5, "hidden_size": 0.5, "mlp": 0.5}, epochs=2)
    report = _run(spec, gpt2_archive, lm_text, tmp_path / "out")
    section = report.transformer_structural
    assert section is not None and section.importance == "activation" and section.calibration_rows == 16
    assert section.widths_after.hidden_size == 16 and section.params_after < section.params_before
    assert section.recovery is not None and "KL on logits" in section.recovery
    pruned, after = section.after_pruning, report.after
    assert pruned is not None and pruned.perplexity is not None
    assert after is not None and after.val.perplexity is not None and after.val.perplexity < pruned.perplexity
    folder = builders.extract(tmp_path / "out" / "model.tar.gz", tmp_path / "unpacked")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert (loaded.config.n_embd, loaded.config.n_head) == (16, 1)
    assert sum(p.numel() for p in loaded.parameters()) == section.params_after == report.size_after.params_total
    assert report.latency_after is not None and report.latency_after.tokens_per_s
    assert report.speedup is not None and report.speedup > 0
    shown = report.model_dump(mode="json")
    md, page = render_markdown(shown), render_report_html(shown)
    assert "| Hidden size | 32 | 16 | -50% |" in md and "KL on logits" in md
    assert '<section id="transformer">' in page and "Hidden size" in page


def test_llama_job_without_data_falls_back_to_magnitude(tmp_path: Path) -> None:
    _llama(tmp_path / "llama")
    archive = builders.archive(tmp_path / "llama", tmp_path / "llama.tar.gz")
    report = _run(_spec({"attention_heads": 0.5, "layers": 0.25}), archive, None, tmp_path / "out")
    section = report.transformer_structural
    assert section is not None and section.importance == "magnitude" and len(section.removed_layers) == 1
    assert any("weight magnitude" in n for n in section.notes)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        builders.extract(tmp_path / "out" / "model.tar.gz", tmp_path / "u")
    )
    assert (loaded.config.num_attention_heads, loaded.config.num_key_value_heads) == (4, 1)
    assert loaded.config.num_hidden_layers == 3 and _out(loaded).shape == (4, 16, 300)


def test_bert_classifier_job_with_a_parameter_budget(tmp_path: Path) -> None:
    model = builders.archive(builders.bert_classifier(tmp_path / "bert"), tmp_path / "bert.zip", "zip")
    texts = builders.text_jsonl(tmp_path / "labelled.jsonl", labels=True)
    spec = _spec({"mlp": 0.75, "layers": 0.5, "target_params": 0.95}, epochs=1)
    report = _run(spec, model, texts, tmp_path / "out")
    section = report.transformer_structural
    assert section is not None and section.budget_reached and section.scale < 1.0
    assert section.params_after <= 0.95 * section.params_before
    assert section.after_pruning is not None and section.after_pruning.accuracy is not None
    assert report.after is not None and report.after.val.accuracy is not None
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(
        builders.extract(tmp_path / "out" / "model.zip", tmp_path / "u")
    )
    assert sum(p.numel() for p in loaded.parameters()) == section.params_after


def test_unreachable_speedup_budget_prunes_at_the_ceilings_and_says_so(gpt2_archive: Path, tmp_path: Path) -> None:
    report = _run(_spec({"mlp": 0.5, "target_speedup": 100.0}), gpt2_archive, None, tmp_path / "out")
    section = report.transformer_structural
    assert section is not None and section.budget_reached is False and section.scale == 1.0
    assert section.measured_speedup is not None and section.measured_speedup < 100.0
    assert section.widths_after.intermediate_size == 64  # the ceiling: half of 128
    assert any("target_speedup 100.0 was not reached" in n for n in section.notes)
