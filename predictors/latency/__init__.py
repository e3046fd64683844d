"""Latency tables and the latency predictor: per-block tables for any device, plugged in as files.

``LatencyTable.load(path, space=...)`` reads and checks a CSV/JSON table; ``LatencyPredictor(table)``
predicts subnet latency (calibrated block sums, learned fallback for missing blocks, flagged);
``SlotPlan`` lists every distinct block of a space (what profiling measures).
"""

from .calibration import Calibration, fit_calibration, raw_latency
from .fallback import LatencyFallback, block_features
from .predictor import LatencyBatch, LatencyEstimate, LatencyPredictor
from .slots import SlotPlan
from .table import FORMAT, Entry, LatencyTable, TableHeader, map_bits

__all__ = [
    "FORMAT", "Calibration", "Entry", "LatencyBatch", "LatencyEstimate", "LatencyFallback", "LatencyPredictor",
    "LatencyTable", "SlotPlan", "TableHeader", "block_features", "fit_calibration", "map_bits", "raw_latency",
]
