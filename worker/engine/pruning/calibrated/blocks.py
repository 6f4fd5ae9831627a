"""A model's chain of blocks (transformer layers in an nn.ModuleList), run one block at a time.

One forward of the model per calibration batch records the first block's input and the other arguments every
block was called with (attention masks, rotary embeddings); a block is then re-run on hidden states of the
previous, already pruned, block with its own recorded arguments. A list whose blocks do not feed each other
(each block's input the previous block's output, each called once) is not a chain, and is not used as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from worker.engine.models.calling import ModelInputs
from worker.engine.models.outputs import output_tensors
from worker.engine.pruning.targets import PruneTarget


@dataclass(frozen=True)
class BlockChain:
    path: str  # e.g. "transformer.h" or "model.layers"
    blocks: nn.ModuleList

    def prefix(self, index: int) -> str:
        return f"{self.path}.{index}." if self.path else f"{index}."


@dataclass
class BlockCall:
    """One batch's call of one block, less its hidden-states input."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    keyword: bool  # the hidden states came as kwargs["hidden_states"], not as the first positional argument

    def run(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The block's main output on ``hidden`` with this call's other arguments."""
        if self.keyword:
            return main_tensor(block(*self.args, hidden_states=hidden, **self.kwargs))
        return main_tensor(block(hidden, *self.args, **self.kwargs))


def main_tensor(out: Any) -> torch.Tensor:
    """A block's hidden-states output: the tensor, or the first tensor of a tuple or ModelOutput."""
    if isinstance(out, torch.Tensor):
        return out
    found = output_tensors(out)
    if not found:
        raise TypeError(f"a block returned no tensor ({type(out).__name__})")
    return found[0]


def find_chain(module: nn.Module, targets: Sequence[PruneTarget]) -> BlockChain | None:
    """The nn.ModuleList of 2+ entries that holds the most targets, if any holds one."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, m in module.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) >= 2:
            prefix = f"{name}." if name else ""
            count = sum(1 for t in targets if t.name.startswith(prefix))
            if count and (best is None or count > best[0]):
                best = (count, name, m)
    return BlockChain(best[1], best[2]) if best is not None else None


def _split_hidden(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor | None, BlockCall]:
    if args and isinstance(args[0], torch.Tensor):
        return args[0], BlockCall(args[1:], dict(kwargs), keyword=False)
    rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
    hidden = kwargs.get("hidden_states")
    return (hidden if isinstance(hidden, torch.Tensor) else None), BlockCall(args, rest, keyword=True)


@dataclass
class _Seen:
    """One forward's block calls: each block's call and whether its input was the previous block's output."""

    blocks: int
    calls: list[list[tuple[BlockCall, bool]]]
    first: torch.Tensor | None = None  # the first block's hidden input
    last: tuple[int, torch.Tensor] | None = None  # the latest block output, until the next block is called

    @classmethod
    def of(cls, blocks: int) -> _Seen:
        return cls(blocks, [[] for _ in range(blocks)])

    def enter(self, i: int, hidden: torch.Tensor | None, call: BlockCall) -> None:
        if i == 0:
            self.first = hidden
        fed = i == 0 or (self.last is not None and self.last[0] == i - 1 and _same(hidden, self.last[1]))
        self.calls[i].append((call, fed))
        self.last = None  # only one block output is held at a time: memory for one, not for every block

    def leave(self, i: int, out: Any) -> None:
        self.last = (i, main_tensor(out))


@contextmanager
def _recording(chain: BlockChain, seen: _Seen) -> Iterator[None]:
    handles: list[RemovableHandle] = []

    def pre(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen.enter(i, *_split_hidden(args, kwargs))

        return hook

    def post(i: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], out: Any) -> None:
            seen.leave(i, out)

        return hook

    try:
        for i, block in enumerate(chain.blocks):
            handles.append(block.register_forward_pre_hook(pre(i), with_kwargs=True))
            handles.append(block.register_forward_hook(post(i), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and (a is b or (a.shape == b.shape and torch.equal(a, b)))


@torch.no_grad()
def record_calls(
    chain: BlockChain, batches: Sequence[ModelInputs], run_model: Callable[[ModelInputs], Any]
) -> tuple[list[torch.Tensor], list[list[BlockCall]]] | str:
    """Per batch, the first block's hidden input and every block's call; or why the list is not a chain."""
    hidden: list[torch.Tensor] = []
    calls: list[list[BlockCall]] = [[] for _ in chain.blocks]
    for batch in batches:
        seen = _Seen.of(len(chain.blocks))
        with _recording(chain, seen):
            run_model(batch)
        if any(len(c) != 1 for c in seen.calls):
            return f"the blocks of {chain.path!r} are not each called once per forward"
        if seen.first is None or not all(fed for ((_call, fed),) in seen.calls):
            return f"the blocks of {chain.path!r} do not each take the previous block's output"
        hidden.append(seen.first)
        for i, ((call, _fed),) in enumerate(seen.calls):
            calls[i].append(call)
    return hidden, calls
