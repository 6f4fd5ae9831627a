"""SparseGPT (Frantar & Alistarh 2023): prune a layer column by column and update the weights not yet visited so
that the layer's output on the calibration inputs changes as little as possible (optimal brain surgeon).

With H = 2 X^T X (damped) and U the upper Cholesky factor of H^-1, removing column j's pruned entries costs
w^2 / U_jj^2, and the best correction of the columns after j is -(w - q) / U_jj * U[j, j:]. Masks are chosen
for ``blocksize`` columns at a time from the weights as updated so far; the correction of the columns beyond a
block is applied once per block.
"""

from __future__ import annotations

import torch

from worker.engine.errors import UnsupportedError
from worker.engine.pruning.calibrated.patterns import Pattern, smallest_per_row

_DAMP_RETRIES = 4  # each retry multiplies the damping by 10


def inverse_cholesky_upper(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped H^-1; more damping while H is not positive definite."""
    h = hessian.clone()
    dead = h.diagonal() == 0  # inputs that were always zero: any weight there is free
    h[dead, dead] = 1.0
    damp = percdamp * float(h.diagonal().mean())
    for _ in range(_DAMP_RETRIES):
        lower, info = torch.linalg.cholesky_ex(h + damp * torch.eye(len(h), device=h.device, dtype=h.dtype))
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
        damp *= 10.0
    raise UnsupportedError("sparsegpt: the calibration inputs' Hessian is not invertible even with strong damping")


def _block_counts(pattern: Pattern, width: int, start: int, end: int) -> int:
    """Entries pruned per row among columns [start, end): a share of the row's count that sums to it exactly."""
    k = pattern.row_count(width)
    return k * end // width - k * start // width


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern, blocksize: int, percdamp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated weight with pruned entries exactly 0, prune-mask) of one ``[rows, width]`` float32 matrix."""
    w = weight.clone()
    width = w.shape[1]
    dead = hessian.diagonal() == 0
    u = inverse_cholesky_upper(hessian, percdamp)
    prune = torch.zeros_like(w, dtype=torch.bool)
    step = blocksize if pattern.nm is None else max(1, blocksize // pattern.nm[1]) * pattern.nm[1]
    for start in range(0, width, step):
        end = min(start + step, width)
        block, u_block = w[:, start:end].clone(), u[start:end, start:end]
        diag = u_block.diagonal()
        errors = torch.zeros_like(block)
        chosen = torch.zeros_like(block, dtype=torch.bool)
        if pattern.nm is None:
            scores = (block.square() / diag.square()).masked_fill(dead[start:end], 0.0)
            chosen = smallest_per_row(scores, _block_counts(pattern, width, start, end))
        for j in range(end - start):
            if pattern.nm is not None and j % pattern.nm[1] == 0:
                group = slice(j, j + pattern.nm[1])
                scores = (block[:, group].square() / diag[group].square()).masked_fill(dead[start:end][group], 0.0)
                chosen[:, group] = pattern.prune_mask(scores)
            col = block[:, j]
            kept = col.masked_fill(chosen[:, j], 0.0)
            err = (col - kept) / diag[j]
            block[:, j:] -= err.unsqueeze(1) * u_block[j, j:].unsqueeze(0)
            block[:, j] = kept  # exactly the kept value (and exactly 0 where pruned), whatever the rounding
            errors[:, j] = err
        w[:, start:end] = block
        w[:, end:] -= errors @ u[start:end, end:]
        prune[:, start:end] = chosen
    return w, prune
