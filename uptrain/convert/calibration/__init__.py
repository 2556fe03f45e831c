"""Running the source model on calibration text: per-layer statistics for the calibrated methods,
collected independently per layer (collect.py) or sequentially on the partly converted model
(sequential.py), over the attention modules of one layer (modules.py)."""

from uptrain.convert.calibration.calibrate import collect_calibration
from uptrain.convert.calibration.collect import collect_statistics
from uptrain.convert.calibration.inputs import (
    DEFAULT_CALIBRATION,
    CalibrationSpec,
    calibration_spec,
    calibration_token_ids,
    load_source_model,
)
from uptrain.convert.calibration.stats import LayerCalibration, ReplayBatch

__all__ = [
    "DEFAULT_CALIBRATION",
    "CalibrationSpec",
    "LayerCalibration",
    "ReplayBatch",
    "calibration_spec",
    "calibration_token_ids",
    "collect_calibration",
    "collect_statistics",
    "load_source_model",
]
