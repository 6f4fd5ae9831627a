"""Whether a pruning method can make a model faster on a runtime, stated beside what was measured.

Only removing work speeds a dense kernel up. Masks leave every tensor at its dense shape, and neither
PyTorch's dense kernels nor ONNX Runtime's CPU and CUDA providers skip zeros in dense weights, so a masked
artifact's true speedup is 1.0x whatever its sparsity: a measured ratio other than 1.0 is timing noise.
"""

from __future__ import annotations

from prunekit.spec import PruningSpec
from prunekit.spec.pruning import LatencyRuntime

_STRUCTURAL = "channels (or heads, blocks) are removed physically: the model does less dense work, on any runtime"
_CHANNEL = (
    "channels are zeroed, not removed: the tensors keep their dense shapes and {runtime} multiplies the zeros "
    "(method structural removes them)"
)
_UNSTRUCTURED = (
    "unstructured zeros stay in dense weights, and {runtime} has no sparse kernel that skips them: the true "
    "speedup is 1.0x"
)
_NM = (
    "{n}:{m} zeros stay in dense weights: only a semi-structured sparse kernel (e.g. PyTorch's "
    "to_sparse_semi_structured on recent NVIDIA GPUs, or TensorRT) can exploit them, and {runtime} does not "
    "apply one to this artifact"
)
_RUNTIME_NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}


def speedup_possible(pruning: PruningSpec, runtime: LatencyRuntime) -> tuple[bool, str]:
    """(can a speedup exist, why) for the job's pruning method on `runtime`."""
    name = _RUNTIME_NAMES[runtime]
    method = pruning.method
    if method in ("structural", "transformer_structural"):
        return True, _STRUCTURAL
    if method == "channel":
        return False, _CHANNEL.format(runtime=name)
    if method == "nm" or getattr(pruning, "pattern", "unstructured") == "n:m":
        return False, _NM.format(n=getattr(pruning, "n", 2), m=getattr(pruning, "m", 4), runtime=name)
    return False, _UNSTRUCTURED.format(runtime=name)
