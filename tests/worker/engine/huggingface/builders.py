"""Small Hugging Face checkpoints built from configs (random init, nothing downloaded), archived as users send them."""

from __future__ import annotations

import json
import pydoc_data.topics
import tarfile
import zipfile
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

# English text that ships with Python (the help topics of pydoc).
ENGLISH = [t for t in pydoc_data.topics.topics.values() if len(t) > 200]
SEQ = 32


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of 300 tokens trained here on the English text above."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(ENGLISH, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "[PAD]", "</s>"]))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]", pad_token="[PAD]"
    )


def gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 causal LM with its tokenizer, saved with save_pretrained."""
    tok = tokenizer()
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=64,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def bert_classifier(folder: Path, labels: int = 2) -> Path:
    """A 2-layer BERT sequence classifier with its tokenizer."""
    tok = tokenizer()
    cfg = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=labels, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def bert_encoder(folder: Path) -> Path:
    """A 2-layer BERT encoder (AutoModel: feature extraction) with its tokenizer."""
    tok = tokenizer()
    cfg = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def vit_classifier(folder: Path) -> Path:
    """A 2-layer ViT image classifier for 8x8 one-channel images in 10 classes (the shape of sklearn digits)."""
    cfg = transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=10,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.ViTForImageClassification(cfg).save_pretrained(folder)
    return folder


def archive(folder: Path, target: Path, kind: str = "tar.gz") -> Path:
    """The folder as a .tar.gz, .tar or .zip with the folder's name as its single top folder."""
    if kind == "zip":
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                zf.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
        return target
    with tarfile.open(target, "w:gz" if kind == "tar.gz" else "w") as tf:
        tf.add(folder, folder.name)
    return target


def text_jsonl(path: Path, n: int = 60, labels: bool = False) -> Path:
    """English help texts, one per line; with labels, 1 for texts that mention 'function', else 0."""
    with path.open("w") as fh:
        for text in ENGLISH[:n]:
            row: dict[str, object] = {"text": text[:1500]}
            if labels:
                row["label"] = int("function" in text[:300])
            fh.write(json.dumps(row) + "\n")
    return path


def extract(artifact: Path, dest: Path) -> Path:
    """The artifact's single top folder, unpacked with the standard library (as a user would)."""
    if zipfile.is_zipfile(artifact):
        with zipfile.ZipFile(artifact) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(artifact) as tf:
            tf.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top
