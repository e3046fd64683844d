"""Config sections owned by other packages, adapted to the experiment config (paths, cross-checks).

Kept apart from :mod:`nas.config` so that file stays about parsing and errors; each section here is
a frozen pydantic model that ``ExperimentConfig`` embeds.
"""

from __future__ import annotations

from pydantic import model_validator

from supernets.config import SupernetConfig

from .config_paths import ExistingPath

__all__ = ["SupernetSection", "EVALUATION_FIELDS"]

EVALUATION_FIELDS = {"bn_calib_samples", "eval_batch_size", "checkpoint"}


class SupernetSection(SupernetConfig):
    """``supernet:``: train the quantized supernet in the run folder, or reuse a trained one.

    ``checkpoint``: a supernet trained earlier (e.g. ``runs/<run>/supernet.pt``); it must be for the
    same search space, and then the training keys must be left out (they are read from it).
    """

    checkpoint: ExistingPath | None = None

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
        return SupernetConfig(**self.model_dump(exclude={"checkpoint"}))
