"""Latency tables and the latency predictor: per-block tables for any device, plugged in as files.

``LatencyTable.load(path, space=...)`` reads and checks a CSV/JSON table; ``LatencyPredictor(table)``
predicts subnet latency (calibrated block sums, learned fallback for missing blocks, flagged);
``SlotPlan`` lists every distinct block of a space (what profiling measures); ``table_coverage`` says
which of them a table lacks; ``read_timings`` / ``calibrate_from_timings`` fit a table's calibration on
end-to-end subnet timings from the device itself.
"""

from .calibration import Calibration, fit_calibration, raw_latency
from .coverage import Coverage, table_coverage
from .fallback import LatencyFallback, block_features
from .predictor import LatencyBatch, LatencyEstimate, LatencyPredictor
from .slots import SlotPlan
from .table import FORMAT, Entry, LatencyTable, TableHeader, map_bits
from .timings import SubnetTimings, calibrate_from_timings, read_timings, write_timings_template

__all__ = [
    "FORMAT", "Calibration", "Coverage", "Entry", "LatencyBatch", "LatencyEstimate", "LatencyFallback",
    "LatencyPredictor", "LatencyTable", "SlotPlan", "SubnetTimings", "TableHeader", "block_features",
    "calibrate_from_timings", "fit_calibration", "map_bits", "raw_latency", "read_timings", "table_coverage",
    "write_timings_template",
]
