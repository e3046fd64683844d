"""The ``supernet:`` section of an experiment config (pure pydantic: importing it does not load torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SupernetConfig", "MAX_EPOCHS"]

MAX_EPOCHS = 100_000
"""Most epochs a config may ask for: far beyond any real schedule, refused before a run trains for ever."""


class SupernetConfig(BaseModel):
    """The ``supernet:`` section of an experiment config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_epochs: int = Field(2, ge=0, le=MAX_EPOCHS, description="float epochs of the largest subnet alone")
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS, description="sandwich-rule epochs")
    qat_start: int = Field(0, ge=0, le=MAX_EPOCHS, description="sandwich epoch from which subnets are fake-quantized")
    batch_size: int = Field(64, ge=2, le=65_536, description="training batch size (SGD with momentum, cosine "
                                                             "learning-rate schedule)")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd: SGD with Nesterov momentum (CNNs); adamw: "
                                                                "AdamW, betas (momentum, 0.99), what transformers "
                                                                "train with")
    lr: float = Field(0.05, gt=0, description="peak learning rate of the cosine schedule")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW's first beta)")
    weight_decay: float = Field(4e-5, ge=0, description="weight decay (not of norms, biases and quantizer steps)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the largest subnet's loss")
    random_subnets: int = Field(2, ge=0, le=64, description="random subnets per step besides largest and smallest")
    distillation: Literal["inplace", "none"] = Field("inplace", description="inplace: students learn from the largest "
                                                                            "subnet's soft labels; none: from the "
                                                                            "labels")
    student_weight: float = Field(1.0, gt=0, le=1, description="weight of each student's loss against the largest "
                                  "subnet's (below 1: the students pull less on the weights the largest shares "
                                  "with them)")
    student_gradients: Literal["sum", "project"] = Field(
        "sum", description="sum: add the students' gradients to the largest subnet's; project: where they "
                           "conflict with it (negative dot product), drop their component along it first "
                           "(gradient surgery, as NASViT), so the students cannot undo the largest's step")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    quant_lr_scale: float = Field(1.0, gt=0, description="learning-rate multiplier of the LSQ steps and zero "
                                  "points (below 1: a step of a few thousandths must not move by more than itself)")
    wdr_weight: float = Field(0.0, ge=0, description="weight of EQ-Net's WDR loss (0 = off)")
    augment: bool = Field(True, description="random crop with padding and horizontal flip of image batches")
    bn_calib_samples: int = Field(500, ge=1, le=10_000_000, description="training images used to recalibrate BN per "
                                                                        "subnet")
    eval_batch_size: int = Field(256, ge=1, le=65_536, description="batch size of subnet evaluation and BN "
                                                                   "recalibration")
    seed: int = Field(0, ge=0, description="seeds the weights, the subnet sampling and the augmentation")
