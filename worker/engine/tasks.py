"""What a model does, as evaluation sees it: classification, causal language modelling or feature extraction.

The task decides how outputs are read (class logits, next-token logits, pooled features), which metrics the
report gets (accuracy, perplexity, output fidelity) and what fine-tuning trains on.
"""

from __future__ import annotations

from enum import StrEnum

import torch

from worker.engine.data import Dataset, check_labels_fit
from worker.engine.errors import InvalidSpecError, UnsupportedError
from worker.engine.models.handle import LoadedModel
from worker.engine.text_data import TextContext

__all__ = ["EvalTask", "TextContext", "check_outputs_fit", "task_of", "text_context"]


class EvalTask(StrEnum):
    CLASSIFICATION = "classification"
    CAUSAL_LM = "causal_lm"
    FEATURE_EXTRACTION = "feature_extraction"


_BY_MODEL_TASK = {
    "auto": EvalTask.CLASSIFICATION,
    "sequence_classification": EvalTask.CLASSIFICATION,
    "image_classification": EvalTask.CLASSIFICATION,
    "causal_lm": EvalTask.CAUSAL_LM,
    "feature_extraction": EvalTask.FEATURE_EXTRACTION,
}


def task_of(model: LoadedModel) -> EvalTask:
    """The evaluation task of a loaded model (model.task, or the Hugging Face checkpoint's)."""
    return _BY_MODEL_TASK[model.task]


def text_context(model: LoadedModel, task: EvalTask) -> TextContext:
    """Where text data finds its tokenizer: the Hugging Face checkpoint's folder, if the model is one."""
    return TextContext(model.hf_source.root if model.hf_source is not None else None, task == EvalTask.CAUSAL_LM)


def check_outputs_fit(task: EvalTask, output: torch.Tensor, data: Dataset) -> None:
    """The model's main output must suit the task and the data; raises with what to set instead."""
    if task is EvalTask.CLASSIFICATION:
        if output.dim() != 2:
            raise UnsupportedError(
                "only classification models (output [batch, classes]) can be evaluated on data as classifiers; this "
                f"one returns {list(output.shape)}: set model.task to causal_lm (next-token logits) or "
                "feature_extraction (embeddings), or run it without data to prune and measure latency and FLOPs"
            )
        check_labels_fit(data, output.shape[1])
        return
    if task is EvalTask.CAUSAL_LM:
        ids = data.x_train
        if not isinstance(ids, torch.Tensor) or output.dim() != 3 or ids.is_floating_point() or ids.dim() != 2:
            raise InvalidSpecError(
                "model.task causal_lm needs a model that maps token ids [batch, tokens] to next-token logits "
                f"[batch, tokens, vocabulary]; got inputs {list(ids.shape)} ({ids.dtype}) and output "
                f"{list(output.shape)}"
            )
        if int(ids.max()) >= output.shape[-1]:
            raise InvalidSpecError(
                f"the data has token id {int(ids.max())} but the model predicts {output.shape[-1]} tokens"
            )
