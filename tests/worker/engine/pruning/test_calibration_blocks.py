"""Which nn.ModuleLists the calibrated pass may run one block at a time (worker/engine/pruning/calibrated/blocks)."""

from __future__ import annotations

import torch
from torch import nn

from worker.engine.pruning.calibrated.blocks import BlockChain, record_calls


class _Stack(nn.Module):
    """Blocks run in sequence (a chain), side by side on one input, or the first one twice."""

    def __init__(self, wiring: str) -> None:
        super().__init__()
        self.wiring = wiring
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wiring == "parallel":
            return sum((b(x) for b in self.blocks), torch.zeros_like(x))
        if self.wiring == "repeated":
            x = self.blocks[0](x)
        for b in self.blocks:
            x = b(x)
        return x


def _record(wiring: str) -> object:
    model = _Stack(wiring)
    batches = [{"x": torch.randn(2, 4)}, {"x": torch.randn(2, 4)}]
    with torch.no_grad():
        return record_calls(BlockChain("blocks", model.blocks), batches, lambda batch: model(batch["x"]))


def test_a_chain_records_each_batchs_first_input_and_every_blocks_call() -> None:
    recorded = _record("chain")
    assert not isinstance(recorded, str)
    hidden, calls = recorded
    assert len(hidden) == 2 and [len(c) for c in calls] == [2, 2, 2]


def test_blocks_side_by_side_are_not_a_chain() -> None:
    assert _record("parallel") == "the blocks of 'blocks' do not each take the previous block's output"


def test_a_block_called_twice_is_not_a_chain() -> None:
    assert _record("repeated") == "the blocks of 'blocks' are not each called once per forward"
