"""APQ-style transfer: learn accuracy from cheap full-precision samples, adapt with few quantized ones.

Measuring a quantized subnet costs far more than a full-precision one (bits multiply the space),
so APQ pre-trains its predictor on architecture-only (FP) accuracies and fine-tunes it on a few
quantized ones. Two methods:

- ``"mlp"`` (APQ): an MLP on the architecture genes whose first layer gains a quantization branch,
  ``h1 = ReLU(W1·arch + Wq·quant + b1)`` with ``Wq`` initialised to zero, so fine-tuning starts
  exactly at the FP predictor. (APQ, Wang et al., CVPR 2020, adds its quantization branch outside the
  ReLU; inside it, the branch can also switch units off, which is how low bits remove capacity.) Torch on the CPU,
  initialised and shuffled by a local ``torch.Generator``: the global RNG is never touched.
- ``"residual"``: ``quantized ≈ base(arch) + residual(arch, quant)`` with registered scikit-learn
  models (by default an SVR base and a ridge residual): cheap and hard to overfit.
- ``"stacked"``: the float base's prediction becomes one more input of the default predictor (the
  mean of ridge, GP and gradient boosting on genes, costs and sensitivity), which learns how much of
  it carries over; from scratch it *is* the default predictor. Where quantization, not architecture,
  drives accuracy (the CIFAR-10 supernet, where the float base alone ranks quantized subnets poorly)
  this is the only method that did not lose to scratch (BENCHMARKS.md, ``predictor_benchmark.py``).

Without :meth:`TransferPredictor.pretrain` the same network is trained from scratch on the
quantized samples, which is the baseline transfer is compared with.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import threadpool_limits

from search_spaces import Genome, InputError, SearchSpace

from .conformal import MIN_SAMPLES, AccuracyPredictor
from .features import FeatureEncoder
from .models import ENSEMBLE_MEMBERS, MeanEnsemble, build_model, fit_quietly, frozen
from .sensitivity import QuantSensitivity

if TYPE_CHECKING:
    import torch

__all__ = ["TransferPredictor", "METHODS"]

METHODS = ("mlp", "residual", "stacked")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, restoring the caller's setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _linear(n_in: int, n_out: int, gen: torch.Generator, *, bias: bool = True, zero: bool = False) -> Any:
    """``nn.Linear`` initialised like PyTorch's default, but from ``gen`` (or zeros)."""
    import torch
    from torch import nn

    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, bias=bias)
    bound = 1 / math.sqrt(max(n_in, 1))
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
        else:
            layer.weight.uniform_(-bound, bound, generator=gen)
        if bias:
            layer.bias.uniform_(-bound, bound, generator=gen)
    return layer


def _make_net(n_arch: int, n_quant: int, hidden: Sequence[int], gen: torch.Generator) -> Any:
    """The quantization-aware MLP: arch → hidden (+ zero-initialised quant branch) → ... → 1."""
    from torch import nn

    class QuantAwareMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.arch = _linear(n_arch, hidden[0], gen)
            self.quant = _linear(n_quant, hidden[0], gen, bias=False, zero=True)
            layers: list[nn.Module] = []
            for a, b in zip(hidden, [*hidden[1:], 1]):
                layers += [nn.ReLU(), _linear(a, b, gen)]
            self.body = nn.Sequential(*layers)

        def forward(self, arch: Any, quant: Any) -> Any:  # (B, n_arch), (B, n_quant) -> (B,)
            return self.body(self.arch(arch) + self.quant(quant)).squeeze(-1)

    return QuantAwareMLP()


def _train(net: Any, arch: np.ndarray, quant: np.ndarray, z: np.ndarray, *, params: list[Any], epochs: int,
           lr: float, weight_decay: float, gen: torch.Generator, batch_size: int = 256) -> Any:
    """Adam on MSE; full batch for small data, seeded shuffled mini-batches otherwise."""
    import torch

    a, q, t = (torch.as_tensor(v, dtype=torch.float32) for v in (arch, quant, z))
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(t), generator=gen) if len(t) > batch_size else torch.arange(len(t))
        for idx in order.split(batch_size):
            loss = torch.nn.functional.mse_loss(net(a[idx], q[idx]), t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


class TransferPredictor(AccuracyPredictor):
    """Full-precision → quantized accuracy predictor with the :class:`AccuracyPredictor` interface.

    Args:
        space: the search space.
        method: ``"mlp"`` (APQ's quantization branch) or ``"residual"`` (base + residual models).
        hidden: MLP widths. APQ/OFA use 3×400; 3×128 transferred as well on the synthetic task from
            few quantized samples, in much less training time.
        pretrain_epochs, finetune_epochs: Adam epochs on the FP and the quantized samples (training
            from scratch uses ``pretrain_epochs`` and ``lr``).
        lr, finetune_lr: their learning rates (1e-3 and 100 epochs fine-tuned best among
            {3e-4, 1e-3, 3e-3} × {100, 300} on the synthetic task; longer changed nothing).
        weight_decay: Adam weight decay for every stage (1e-2 beat 1e-4 and 1e-3 for transfer and
            for scratch alike on 25–50 quantized samples).
        base_model, residual_model: registered model names for the ``"residual"`` method (``base_model``
            is also the base of ``"stacked"``).
        members: the registered models ``"stacked"`` averages.
        analytic_features: add log MACs to the arch input and log BitOps, log size and the bit-width
            histogram to the quant input.
        interactions: add the space's declared gene-pair interactions whose second gene is a quantization
            gene to the quant input.
        sensitivity: a quantization-sensitivity table: its sum over the genome's bit-widths joins the
            quant input.
        compare_scratch: also cross-validate the same model trained from scratch and keep the better
            (the report shows both scores).
        n_folds, seed: cross-validation folds and the seed of folds, initialisation and shuffling.
    """

    def __init__(self, space: SearchSpace, *, method: str = "mlp", hidden: Sequence[int] = (128, 128, 128),
                 pretrain_epochs: int = 200, finetune_epochs: int = 100, lr: float = 1e-3,
                 finetune_lr: float = 1e-3, weight_decay: float = 1e-2, base_model: str = "svr",
                 residual_model: str = "ridge", analytic_features: bool = True, interactions: bool = True,
                 compare_scratch: bool = False,
                 sensitivity: QuantSensitivity | None = None, members: Sequence[str] = ENSEMBLE_MEMBERS,
                 n_folds: int = 5, seed: int = 0) -> None:
        super().__init__(space, n_folds=n_folds, seed=seed)
        if method not in METHODS:
            raise InputError(f"unknown transfer method {method!r}; expected one of {list(METHODS)}", field="method")
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {hidden}")
        build_model(base_model)  # refuse unknown names now, not after pretraining
        build_model(residual_model)
        for member in members:
            build_model(member)
        if method == "stacked" and not members:
            raise InputError("method 'stacked' needs at least one member model to stack beside the transfer",
                             field="members")
        self.members = tuple(members)
        self.method, self.hidden = method, tuple(hidden)
        self.pretrain_epochs, self.finetune_epochs = pretrain_epochs, finetune_epochs
        self.lr, self.finetune_lr, self.weight_decay = lr, finetune_lr, weight_decay
        self.base_model, self.residual_model = base_model, residual_model
        self.analytic_features, self.compare_scratch = analytic_features, compare_scratch
        self.arch_encoder = FeatureEncoder(space, kinds=("arch",), costs=("macs",) if analytic_features else ())
        self.quant_encoder = FeatureEncoder(space, kinds=("quant",),
                                            costs=("bitops", "size_bytes") if analytic_features else (),
                                            interactions=interactions, bit_counts=analytic_features,
                                            sensitivity=sensitivity)
        if self.quant_encoder.n_features == 0:
            raise InputError(f"space {space.name!r} has no quantization genes to transfer to", field="space")
        self._base: Any = None
        self._base_scaling: tuple[float, float] | None = None
        self._n_pretrain = 0

    @property
    def pretrained(self) -> bool:
        return self._base is not None

    def pretrain(self, genomes: Sequence[Genome], y_fp: Sequence[float]) -> TransferPredictor:
        """Learn full-precision accuracy from architecture genes only (quantization genes ignored)."""
        genomes = list(genomes)
        target = np.asarray(y_fp, dtype=np.float64).ravel()
        if target.size != len(genomes) or target.size < MIN_SAMPLES or not np.all(np.isfinite(target)):
            raise InputError(f"pretraining needs at least {MIN_SAMPLES} genomes with one finite accuracy each; "
                             f"got {len(genomes)} genomes and {target.size} accuracies", field="accuracy")
        self._base_scaling = (float(target.mean()), float(target.std()) or 1.0)
        z = (target - self._base_scaling[0]) / self._base_scaling[1]
        arch = self.arch_encoder.fit_transform(genomes)
        with _torch_threads(1), threadpool_limits(limits=1):
            self._base = self._pretrain_model(arch, z)
        self._n_pretrain = len(genomes)
        self._fitted = False
        return self

    def predict_full_precision(self, genomes: Sequence[Genome]) -> np.ndarray:
        """The pretrained base's accuracy, from architecture genes alone (the zero-shot prediction)."""
        if self._base is None or self._base_scaling is None:
            raise RuntimeError("TransferPredictor is not pretrained yet; call pretrain(genomes, y_fp) first")
        arch = self.arch_encoder.transform(genomes)
        if self.method != "mlp":
            z = np.asarray(self._base.predict(arch), dtype=np.float64)
        else:
            z = self._predict_model(self._base, np.concatenate(
                [arch, np.zeros((len(arch), self.quant_encoder.n_features), dtype=np.float32)], axis=1))
        return z * self._base_scaling[1] + self._base_scaling[0]

    def _pretrain_model(self, arch: np.ndarray, z: np.ndarray) -> Any:
        if self.method != "mlp":
            return build_model(self.base_model, seed=self.seed, n_samples=len(z)).fit(arch, z)
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        n_quant = self.quant_encoder.n_features
        net = _make_net(arch.shape[1], n_quant, self.hidden, gen)
        params = [p for name, p in net.named_parameters() if not name.startswith("quant.")]
        return _train(net, arch, np.zeros((len(z), n_quant)), z, params=params,
                      epochs=self.pretrain_epochs, lr=self.lr, weight_decay=self.weight_decay, gen=gen)

    # ---- AccuracyPredictor hooks ------------------------------------------------------------------
    def _target_scaling(self, target: np.ndarray) -> tuple[float, float]:
        return self._base_scaling or super()._target_scaling(target)

    def _encode(self, genomes: Sequence[Genome], *, fit: bool) -> np.ndarray:
        if fit and not self.pretrained:
            self.arch_encoder.fit(genomes)
        if fit:
            self.quant_encoder.fit(genomes)
        return np.concatenate([self.arch_encoder.transform(genomes), self.quant_encoder.transform(genomes)], axis=1)

    def _candidates(self) -> list[str]:
        if not self.pretrained:
            return ["scratch"]
        return ["transfer", "scratch"] if self.compare_scratch else ["transfer"]

    def _fit_model(self, name: str, X: np.ndarray, z: np.ndarray, tuned: Any = None) -> Any:
        arch, quant = self._split(X)
        with _torch_threads(1):
            if self.method == "residual":
                return self._fit_residual(name, X, arch, z, tuned)
            if self.method == "stacked":
                return self._fit_stacked(name, X, arch, z, tuned)
            return self._fit_mlp(name, arch, quant, z)

    def _fit_mlp(self, name: str, arch: np.ndarray, quant: np.ndarray, z: np.ndarray) -> Any:
        import torch

        gen = torch.Generator().manual_seed(self.seed + 1)
        if name == "transfer":
            net, lr, epochs = copy.deepcopy(self._base), self.finetune_lr, self.finetune_epochs
        else:
            net, lr, epochs = _make_net(arch.shape[1], quant.shape[1], self.hidden, gen), self.lr, self.pretrain_epochs
        return _train(net, arch, quant, z, params=list(net.parameters()), epochs=epochs, lr=lr,
                      weight_decay=self.weight_decay, gen=gen)

    def _fit_residual(self, name: str, X: np.ndarray, arch: np.ndarray, z: np.ndarray, tuned: Any) -> Any:
        base = self._base if name == "transfer" else None
        offset = base.predict(arch) if base is not None else 0.0
        model = frozen(tuned[1]) if tuned is not None else build_model(self.residual_model, seed=self.seed,
                                                                       n_samples=len(z))
        return base, model.fit(X, z - offset)

    def _fit_stacked(self, name: str, X: np.ndarray, arch: np.ndarray, z: np.ndarray, tuned: Any) -> Any:
        base = self._base if name == "transfer" else None
        model = frozen(tuned[1]) if tuned is not None else MeanEnsemble(
            [build_model(m, seed=self.seed, n_samples=len(z)) for m in self.members])
        return base, fit_quietly(model, _stack(X, base, arch), z)

    def _predict_model(self, model: Any, X: np.ndarray) -> np.ndarray:
        arch, quant = self._split(X)
        if self.method == "stacked":
            base, stacked = model
            return np.asarray(stacked.predict(_stack(X, base, arch)), dtype=np.float64)
        if self.method == "residual":
            base, residual = model
            offset = base.predict(arch) if base is not None else 0.0
            return np.asarray(residual.predict(X), dtype=np.float64) + offset
        import torch

        with torch.no_grad(), _torch_threads(1):
            return model(torch.as_tensor(arch, dtype=torch.float32),
                         torch.as_tensor(quant, dtype=torch.float32)).double().numpy()

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.arch_encoder.n_features
        return X[:, :k], X[:, k:]

    def _extra_report(self) -> dict[str, Any]:
        return {"method": self.method, "pretrained": self.pretrained, "n_pretrain": self._n_pretrain,
                "analytic_features": self.analytic_features,
                "quant_sensitivity": (self.quant_encoder.sensitivity.metric
                                      if self.quant_encoder.sensitivity is not None else False),
                **({"hidden": list(self.hidden)} if self.method == "mlp" else
                   {"base_model": self.base_model, "members": list(self.members)} if self.method == "stacked" else
                   {"base_model": self.base_model, "residual_model": self.residual_model})}


def _stack(X: np.ndarray, base: Any, arch: np.ndarray) -> np.ndarray:
    """``X`` with the float base's prediction appended (``X`` itself without a base: from scratch)."""
    if base is None:
        return X
    return np.concatenate([X, np.asarray(base.predict(arch), dtype=X.dtype)[:, None]], axis=1)
