"""Running the source model on calibration text, one decoder layer at a time from its shards
(layerwise.py): per-layer statistics for the calibrated methods, over the attention modules of one
layer (modules.py), handed to a sink that converts each layer as it is done."""

from uptrain.convert.calibration.calibrate import calibration_sequences, collect_calibration
from uptrain.convert.calibration.inputs import (
    DEFAULT_CALIBRATION,
    CalibrationSpec,
    calibration_spec,
    calibration_token_ids,
)
from uptrain.convert.calibration.layerwise import Carry, LayerSink
from uptrain.convert.calibration.stats import LayerCalibration, ReplayBatch

__all__ = [
    "DEFAULT_CALIBRATION",
    "CalibrationSpec",
    "Carry",
    "LayerCalibration",
    "LayerSink",
    "ReplayBatch",
    "calibration_sequences",
    "calibration_spec",
    "calibration_token_ids",
    "collect_calibration",
]
