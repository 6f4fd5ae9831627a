"""One-shot pruning on calibration data, layer by layer: Wanda and SparseGPT (unstructured or N:M)."""

from worker.engine.pruning.calibrated.driver import Calibration, CalibrationResult, calibrate
from worker.engine.pruning.calibrated.layers import LayerView, layer_view
from worker.engine.pruning.calibrated.method import CalibratedTarget, compute, with_masks

__all__ = [
    "CalibratedTarget",
    "Calibration",
    "CalibrationResult",
    "LayerView",
    "calibrate",
    "compute",
    "layer_view",
    "with_masks",
]
