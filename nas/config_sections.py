"""Config sections owned by other packages, adapted to the experiment config (paths, cross-checks).

Kept apart from :mod:`nas.config` so that file stays about parsing and errors; each section here is
a frozen pydantic model that the search kind's config (:class:`nas.search_config.SearchExperimentConfig`)
embeds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from search_spaces.errors import nearest

from supernets.backends import LATENCY_BACKENDS
from supernets.config import SupernetConfig

from .config_paths import ExistingPath, resolve_existing

__all__ = ["SupernetSection", "PredictorsSection", "LatencySection", "LatencyTableSpec", "ProfileSpec",
           "EVALUATION_FIELDS"]

EVALUATION_FIELDS = {"bn_calib_samples", "eval_batch_size", "checkpoint", "subnets_at_once"}


class SupernetSection(SupernetConfig):
    """``supernet:``: train the quantized supernet in the run folder, or reuse a trained one.

    ``checkpoint``: a supernet trained earlier (e.g. ``runs/<run>/supernet.pt``); it must be for the
    same search space, and then the training keys must be left out (they are read from it).
    """

    checkpoint: ExistingPath | None = Field(None, description="reuse a trained supernet (same space) instead of "
                                                              "training; then leave the training keys out")
    subnets_at_once: int = Field(1, ge=1, le=64, strict=True,
                                 description="subnets the search measures concurrently on the supernet's device, a "
                                             "supernet copy (and on CUDA a stream) each: pays where one small subnet "
                                             "leaves a GPU idle; on the CPU they share its cores")

    @model_validator(mode="after")
    def _checkpoint_or_training(self) -> SupernetSection:
        if self.checkpoint is not None:
            clash = sorted(self.model_fields_set - EVALUATION_FIELDS)
            if clash:
                raise ValueError(f"with a checkpoint the supernet is not trained again; remove the training keys "
                                 f"{clash} (or remove checkpoint to train anew)")
        if self.qat_start > self.epochs:
            raise ValueError(f"qat_start={self.qat_start} is after the last epoch ({self.epochs}); quantization-aware "
                             "training would never start")
        return self

    def train_config(self) -> SupernetConfig:
        """The training part, as the supernet trainer takes it."""
        return SupernetConfig(**self.model_dump(exclude={"checkpoint", "subnets_at_once"}))


class PredictorsSection(BaseModel):
    """``predictors:``: the accuracy predictors of predictor-guided searchers (``predictor-nsga2``).

    ``dataset``: a predictor dataset CSV written by an earlier run (``predictor_dataset.csv``) whose
    measured accuracies join the training data of every round.
    ``quant_sensitivity``: ``true`` measures ZeroQ's per-layer sensitivity on the supernet before the
    search (``quant_sensitivity.json`` in the run directory) and gives the predictors each genome's
    summed sensitivity as a feature; ``hessian`` measures HAWQ-V3's Hessian costs instead (the table the
    ILP bit allocators minimise, ``hessian_sensitivity.json``); a path reuses a table an earlier run wrote.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("ensemble", description="accuracy predictor of predictor-nsga2: ensemble (mean of ridge, GP and"
                                               " gradient boosting), auto (the cross-validated best of candidates), or"
                                               " a registered model (ridge, svr, gp, mlp, rf, extra_trees, hgb)")
    candidates: list[str] = Field(default_factory=lambda: ["ridge", "svr", "gp"], min_length=1,
                                  description="models auto compares by cross-validation")
    analytic_features: bool = Field(True, description="add log MACs / BitOps / size and the bit-width histogram to the"
                                                      " one-hot genome features")
    interactions: bool = Field(True, description="add the joint one-hot of the gene pairs the space declares (each "
                                                 "stage's depth with the next stage's first activation bits)")
    n_folds: int = Field(5, ge=2, le=20, description="cross-validation folds (model selection and CV+ intervals)")
    dataset: ExistingPath | None = Field(None, description="a predictor_dataset.csv of an earlier run: its measured "
                                                           "accuracies join the training data")
    quant_sensitivity: bool | Literal["hessian"] | Path = Field(
        False, description="true: measure ZeroQ's per-layer quantization sensitivity on the supernet before the "
                           "search and use it as a feature; hessian: HAWQ-V3's Hessian costs instead; a path: reuse a "
                           "quant_sensitivity.json or hessian_sensitivity.json")

    @field_validator("quant_sensitivity", mode="before")
    @classmethod
    def _flag_or_table(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool) or value == "hessian":
            return value
        if isinstance(value, str) and value.strip().lower() == "hessian":
            raise ValueError(f"got {value!r}; did you mean 'hessian'?")
        if isinstance(value, (str, Path)) and str(value).strip():
            return resolve_existing(Path(value), info)
        raise ValueError(f"expected true, false, hessian or the path of a sensitivity table, got {value!r}")

    def predictor_options(self) -> dict[str, object]:
        """Keyword options of ``predictors.accuracy.make_predictor`` besides the model name."""
        return {"analytic_features": self.analytic_features, "interactions": self.interactions,
                "candidates": tuple(self.candidates),
                "n_folds": self.n_folds}


class ProfileSpec(BaseModel):
    """Profile a table for the space on this machine on first use (cached under ``cache_dir``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(description="a registered latency backend: torch-fp32, torch-int8, onnxruntime-fp32, "
                                     "onnxruntime-int8")
    threads: int = Field(1, ge=1, le=64, description="threads the backend times with (1 is steadiest on a shared "
                                                     "machine)")
    batch: int = Field(1, ge=1, le=4096, description="batch size of the timed models")
    runs: int = Field(50, ge=5, le=100_000, description="timed runs per block in all")
    passes: int = Field(10, ge=2, le=10_000, description="interleaved passes the runs are spread over (mean of the "
                                                         "pass medians)")
    cache_dir: Path | None = Field(None, description="where profiled tables are cached (default ~/.cache/qnas/latency)")
    recalibrate: bool = Field(True, description="refit a cached table's calibration on 10 subnets measured at the "
                                                "start of the run (the machine's speed drifts; seconds)")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in LATENCY_BACKENDS:
            names = LATENCY_BACKENDS.names()
            raise ValueError(f"unknown backend {value!r}{nearest(value, names)}; expected one of {names}")
        return value


class LatencyTableSpec(BaseModel):
    """One latency table: a file (any device, e.g. your accelerator's) or a profile of this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="names the metric latency_ms.<name> when there are several tables")
    table: ExistingPath | None = Field(None, description="a latency table file (CSV or JSON, "
                                                         "experiments/latency_tables/README.md) of any device")
    profile: ProfileSpec | None = Field(None, description="profile this machine on first use instead of reading a file")
    backend: str | None = Field(None, description="the backend the table must have been measured on (checked)")
    strict: bool = Field(False, description="a block missing from the table is an error before anything trains, "
                                            "instead of the learned fallback (flagged latency_ms_fallback)")

    @model_validator(mode="after")
    def _one_source(self) -> LatencyTableSpec:
        if (self.table is None) == (self.profile is None):
            raise ValueError("give exactly one of table (a CSV/JSON file) or profile ({backend: ...})")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"name {self.name!r}: expected letters, digits, '_' or '-' (it names the metric)")
        return self


class LatencySection(LatencyTableSpec):
    """``latency:``: one table (``table`` or ``profile`` here) or several (``tables: [...]``, one objective each).

    A single table gives the metric ``latency_ms``; several give ``latency_ms.<name>``.
    """

    tables: list[LatencyTableSpec] | None = Field(None, description="several tables, one objective each (metrics "
                                                                    "latency_ms.<name>)")

    @model_validator(mode="after")
    def _one_source(self) -> LatencySection:  # type: ignore[override]
        if self.tables is None:
            return LatencyTableSpec._one_source(self)  # type: ignore[return-value]
        if self.table is not None or self.profile is not None or self.name is not None:
            raise ValueError("with tables: [...] put table/profile/name inside each entry")
        names = [t.name for t in self.tables]
        if len(self.tables) > 1 and (None in names or len(set(names)) != len(names)):
            raise ValueError(f"several tables need distinct names (they name the metrics latency_ms.<name>); "
                             f"got {names}")
        return self

    def specs(self) -> list[tuple[str, LatencyTableSpec]]:
        """``(metric name, table spec)`` for every table."""
        if self.tables is None:
            return [("latency_ms", self)]
        if len(self.tables) == 1:
            return [("latency_ms", self.tables[0])]
        return [(f"latency_ms.{t.name}", t) for t in self.tables]
