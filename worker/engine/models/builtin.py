"""Built-in architectures of the `prunekit` namespace (entry point `prunekit.architectures:prunekit`).

Small on purpose: they make examples, tests and benchmarks run in seconds on a CPU. All are scriptable
(torch.jit.script) and exportable (torch.export). The `embedding_*` ones take token ids (int64 [batch, seq]).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "DigitsCNN", "DigitsMLP", "TinyResNet", "TokenClassifier"]


class DigitsCNN(nn.Module):
    """A two-conv CNN for 1x8x8 inputs (sklearn's digits); `features` then `classifier`."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ValueError("num_classes and width must be positive")
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _ResidualBlock(nn.Module):
    """Two 3x3 conv+BN with an identity skip: the channel counts of both convs are coupled by the add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TinyResNet(nn.Module):
    """Stem, one residual block, one depthwise-separable block, global pooling, linear head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or width < 1:
            raise ValueError("num_classes, in_channels and width must be positive")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.block = _ResidualBlock(width)
        self.separable = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),  # depthwise
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 1, bias=False),  # pointwise
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.separable(self.block(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DigitsMLP(nn.Module):
    """A Linear-only classifier for 1x8x8 inputs: Flatten, then `depth` hidden Linear+ReLU layers."""

    def __init__(self, num_classes: int = 10, width: int = 256, depth: int = 2) -> None:
        super().__init__()
        if min(num_classes, width, depth) < 1:
            raise ValueError("num_classes, width and depth must be positive")
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(64 if i == 0 else width, width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class _RecurrentEncoder(nn.Module):
    """An LSTM or GRU over the token embeddings; returns every position's output."""

    def __init__(self, dim: int, cell: type[nn.LSTM] | type[nn.GRU]) -> None:
        super().__init__()
        self.rnn = cell(dim, dim, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class _AttentionEncoder(nn.Module):
    """One self-attention block (nn.MultiheadAttention) with a residual and layer norm."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.attn(x, x, x, need_weights=False)[0])


class TokenClassifier(nn.Module):
    """Token ids [batch, seq] -> nn.Embedding -> LSTM, GRU or self-attention -> mean over positions -> classes."""

    def __init__(
        self, vocab_size: int = 100, num_classes: int = 2, dim: int = 32, encoder: str = "lstm", heads: int = 2
    ) -> None:
        super().__init__()
        if min(vocab_size, num_classes, dim, heads) < 1:
            raise ValueError("vocab_size, num_classes, dim and heads must be positive")
        self.embedding = nn.Embedding(vocab_size, dim)
        encoders: dict[str, Callable[[], nn.Module]] = {
            "lstm": lambda: _RecurrentEncoder(dim, nn.LSTM),
            "gru": lambda: _RecurrentEncoder(dim, nn.GRU),
            "attention": lambda: _AttentionEncoder(dim, heads),
        }
        if encoder not in encoders:
            raise ValueError(f"encoder must be one of {', '.join(encoders)}, got {encoder!r}")
        self.encoder = encoders[encoder]()
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(self.embedding(input_ids)).mean(1))


def _token_classifier(encoder: str) -> Callable[..., nn.Module]:
    def build(**kwargs: object) -> nn.Module:
        return TokenClassifier(encoder=encoder, **kwargs)  # type: ignore[arg-type]

    return build


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "digits_mlp": DigitsMLP,
    "tiny_resnet": TinyResNet,
    "embedding_lstm": _token_classifier("lstm"),
    "embedding_gru": _token_classifier("gru"),
    "embedding_attention": _token_classifier("attention"),
}
