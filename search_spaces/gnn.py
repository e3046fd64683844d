"""``gnn``: a per-layer GNN space (LPGNAS) with per-component quantization bits.

Genes of layer ``i`` (``l1`` … ``lL``; ``lL`` is the classifier layer, its width is ``num_classes``):

- ``op``: how a node combines its neighbours (torch_geometric layers in ``supernets.gnn``):
  ``linear`` (no graph, an MLP layer), ``gcn`` (GCNConv: symmetric-normalised adjacency with self
  loops), ``gin`` (GINConv, eps = 0, MLP ``in -> h -> h``), ``gat`` (GATConv: learned attention
  with self loops), ``sage`` (SAGEConv: neighbour aggregate and root through two weights).
- ``aggr`` (active unless ``op == linear``): the reduction over incoming messages, ``add``,
  ``mean`` or ``max``. GCN and GAT reduce coefficient-weighted *transformed* features (GCNConv /
  GATConv ``aggr=``); SAGE and GIN reduce the raw layer inputs before their weights (SAGEConv /
  GINConv ``aggr=``), so ``sage`` + ``mean``/``max`` is GraphSAGE-mean/-max.
- ``heads`` (hidden layers, active when ``op == gat``): attention heads; the ``hidden`` channels are
  split over the heads (``hidden / heads`` each, concatenated). The classifier layer uses one head.
- ``hidden`` and ``act`` (hidden layers only): output width and activation.
- ``skip``: ``none`` or ``linear`` (a bias-free linear projection of the layer input added before
  the activation; a projection so that it works between any widths).
- ``w_bits`` (weights, including GAT's attention vectors), ``a_bits`` (the layer's input features,
  and the features every multiply reads: GCN/GAT transformed features before propagation, GIN's
  inner activation), ``c_bits`` (active for ``gcn``/``gat``: adjacency or attention coefficients),
  from {1, 2, 4, 8, 16, 32}; 32 means not quantized.

Cost conventions (:meth:`GnnSpace.costs`; N = ``num_nodes``, E = ``num_edges`` directed edges
without self loops, E' = E + N with them; ``in``/``out`` are the layer's widths):

- MACs count multiplies only: each weight matrix ``N·in·out`` (SAGE has two, GIN adds
  ``N·out·out``, a ``linear`` skip one more); GCN/GAT propagation ``E'·out`` (coefficient times
  feature); GAT attention logits ``2·N·out``. Unweighted aggregation (SAGE, GIN, ``mean``'s
  division), biases and activations are free, as BN and adds are for the CNN spaces.
- ``params`` equals the parameter count of the torch_geometric module ``supernets.gnn`` builds.
- ``size_bytes``: every weight (attention vectors included) at ``w_bits``/8 bytes, every bias as a
  float32 (4 bytes); quantizer steps (a few floats per layer) are not counted.
- ``bitops`` = Σ MACs · operand bits: weight MACs ``w_bits · a_bits``, propagation MACs
  ``c_bits · a_bits``. SAGE/GIN sums of ``a_bits`` inputs are counted at ``a_bits`` (the integer
  accumulator grows by log2(degree) bits, which is ignored as for every accumulator).

Each cost is a sum of monomials, each factor a function of one gene (:meth:`GnnSpace.cost_terms`):
the same terms give the exact cost of a genome and, in the supernet, the exact *expected* cost under
independent softmax choices, so search-time and reported costs cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .cnn import check_list, check_int, check_option, int_tuple
from .costs import Costs
from .genome import Gene, Genome
from .registry import register_space
from .space import SearchSpace

__all__ = ["GnnSpace", "CostTerm", "GNN_BITS", "GNN_OPS", "GNN_AGGREGATIONS", "GNN_ACTIVATIONS",
           "UNSIGNED_ACTIVATIONS", "COST_METRICS"]

GNN_BITS = (1, 2, 4, 8, 16, 32)
GNN_OPS = ("linear", "gcn", "gin", "gat", "sage")  # canonical order: smallest to largest cost
GNN_AGGREGATIONS = ("add", "mean", "max")
GNN_ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "relu6", "softplus")
UNSIGNED_ACTIVATIONS = ("sigmoid", "relu", "relu6", "softplus")  # outputs >= 0: unsigned quantizers
SKIPS = ("none", "linear")
COST_METRICS = ("macs", "params", "size_bytes", "bitops")
_WEIGHTS_IN = {"linear": 1, "gcn": 1, "gin": 1, "gat": 1, "sage": 2}  # matrices reading the layer input
_BIASES = {"linear": 1, "gcn": 1, "gin": 2, "gat": 1, "sage": 1}
_COEF_OPS = ("gcn", "gat")  # ops with non-constant edge coefficients (c_bits active)


@dataclass(frozen=True)
class CostTerm:
    """One monomial ``coef · Π table[choice of gene]``; every gene appears at most once."""

    coef: float
    factors: tuple[tuple[str, tuple[float, ...]], ...]

    def value(self, space: SearchSpace, genome: Genome) -> float:
        out = self.coef
        for name, table in self.factors:
            out *= table[space.gene(name).choices.index(genome[name])]
        return out


def _str_tuple(name: str, values: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    check_list(name, values)
    check_option(name, all(isinstance(v, str) for v in values), values,
                 f"a non-empty list of names from {list(allowed)}")
    check_option(name, all(v in allowed for v in values), values, f"names from {list(allowed)}")
    check_option(name, len(set(values)) == len(values), values, "no repeated values")
    return tuple(v for v in allowed if v in values)  # canonical order


@register_space("gnn")
class GnnSpace(SearchSpace):
    """GNN layers (op, aggregation, heads, width, activation, skip) with per-layer W/A/coefficient bits.

    Defaults describe Cora (2708 nodes, 10556 directed edges, 1433 features, 7 classes).
    """

    has_blocks: ClassVar[bool] = False

    def __init__(self, *, num_layers: int = 2, in_features: int = 1433, num_classes: int = 7,
                 num_nodes: int = 2708, num_edges: int = 10556, ops: Sequence[str] = GNN_OPS,
                 aggregations: Sequence[str] = GNN_AGGREGATIONS,
                 activations: Sequence[str] = ("linear", "tanh", "relu", "elu"),
                 hidden: Sequence[int] = (8, 16, 32, 64), heads: Sequence[int] = (1, 2, 4, 8),
                 skips: Sequence[str] = SKIPS, w_bits: Sequence[int] = GNN_BITS,
                 a_bits: Sequence[int] = GNN_BITS, c_bits: Sequence[int] = GNN_BITS) -> None:
        self.num_layers = check_int("num_layers", num_layers)
        self.in_features = check_int("in_features", in_features)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.num_nodes = check_int("num_nodes", num_nodes)
        self.num_edges = check_int("num_edges", num_edges, 0)
        self.ops = _str_tuple("ops", ops, GNN_OPS)
        self.aggregations = _str_tuple("aggregations", aggregations, GNN_AGGREGATIONS)
        self.activations = _str_tuple("activations", activations, GNN_ACTIVATIONS)
        self.skips = _str_tuple("skips", skips, SKIPS)
        self.hidden = tuple(sorted(int_tuple("hidden", hidden)))
        self.heads = tuple(sorted(int_tuple("heads", heads)))
        self.w_bits, self.a_bits, self.c_bits = (tuple(sorted(int_tuple(n, v, allowed=GNN_BITS)))
                                                 for n, v in (("w_bits", w_bits), ("a_bits", a_bits),
                                                              ("c_bits", c_bits)))
        if "gat" in self.ops and self.num_layers > 1:
            bad = [(h, k) for h in self.hidden for k in self.heads if h % k]
            check_option("heads", not bad, list(self.heads),
                         f"head counts dividing every hidden width {list(self.hidden)} (e.g. {bad[0][0]} % "
                         f"{bad[0][1]} != 0)" if bad else "")
        self._requires: dict[str, tuple[str, tuple[str, ...]]] = {}
        super().__init__()

    def options(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "in_features": self.in_features, "num_classes": self.num_classes,
                "num_nodes": self.num_nodes, "num_edges": self.num_edges, "ops": list(self.ops),
                "aggregations": list(self.aggregations), "activations": list(self.activations),
                "hidden": list(self.hidden), "heads": list(self.heads), "skips": list(self.skips),
                "w_bits": list(self.w_bits), "a_bits": list(self.a_bits), "c_bits": list(self.c_bits)}

    # ---- genes ---------------------------------------------------------------------------------
    def _declare_genes(self) -> list[Gene]:
        genes: list[Gene] = []
        for i in range(1, self.num_layers + 1):
            p, hidden_layer = f"l{i}", i < self.num_layers
            genes.append(Gene(f"{p}.op", self.ops))
            self._conditional(genes, Gene(f"{p}.aggr", self.aggregations), p, GNN_OPS[1:])  # all but linear
            if hidden_layer:
                self._conditional(genes, Gene(f"{p}.heads", self.heads), p, ("gat",))
                genes += [Gene(f"{p}.hidden", self.hidden), Gene(f"{p}.act", self.activations)]
            genes.append(Gene(f"{p}.skip", self.skips))
            genes += [Gene(f"{p}.w_bits", self.w_bits, "quant"), Gene(f"{p}.a_bits", self.a_bits, "quant")]
            self._conditional(genes, Gene(f"{p}.c_bits", self.c_bits, "quant"), p, _COEF_OPS)
        return genes

    def _conditional(self, genes: list[Gene], gene: Gene, prefix: str, ops: tuple[str, ...]) -> None:
        """Declare ``gene`` only if some op uses it; it is active while ``<prefix>.op`` is in ``ops``."""
        used = tuple(o for o in ops if o in self.ops)
        if used:
            genes.append(gene)
            self._requires[gene.name] = (f"{prefix}.op", used)

    def is_active(self, genome: Genome, gene: Gene) -> bool:
        """Aggregation, heads and coefficient bits matter only for the ops that use them."""
        rule = self._requires.get(gene.name)
        if rule is None:
            return super().is_active(genome, gene)
        return genome[rule[0]] in rule[1]

    def cardinality(self) -> int:
        """Distinct networks: per layer, Σ over ops of the product of the genes active for that op."""
        total = 1
        for i in range(1, self.num_layers + 1):
            layer = [g for g in self.genes if g.name.startswith(f"l{i}.") and g.name != f"l{i}.op"]
            always = math.prod(len(g.choices) for g in layer if g.name not in self._requires)
            total *= always * sum(math.prod(len(g.choices) for g in layer
                                            if g.name in self._requires and op in self._requires[g.name][1])
                                  for op in self.ops)
        return total

    def blocks(self, genome: Genome) -> list[Any]:
        raise NotImplementedError("space 'gnn' has no CNN block list; use costs(genome) and supernets.gnn")

    # ---- costs ---------------------------------------------------------------------------------
    def cost_terms(self, metric: str) -> list[CostTerm]:
        """The monomials whose sum is ``metric`` (one of :data:`COST_METRICS`) of any genome."""
        if metric not in COST_METRICS:
            raise ValueError(f"unknown cost metric {metric!r}; expected one of {COST_METRICS}")
        return [t for i in range(1, self.num_layers + 1) for t in self._layer_terms(i)[metric]]

    def costs(self, genome: Genome) -> Costs:
        """Analytic MACs, parameters, size and BitOps of ``genome`` (conventions in the module doc)."""
        self.validate(genome)
        total = {m: sum(t.value(self, genome) for t in self.cost_terms(m)) for m in COST_METRICS}
        return Costs(int(round(total["macs"])), int(round(total["params"])), float(total["size_bytes"]),
                     int(round(total["bitops"])))

    def _layer_terms(self, i: int) -> dict[str, list[CostTerm]]:
        p, n, e_loops = f"l{i}", float(self.num_nodes), float(self.num_edges + self.num_nodes)
        last = i == self.num_layers
        din: Any = float(self.in_features) if i == 1 else (f"l{i - 1}.hidden", tuple(map(float, self.hidden)))
        dout: Any = float(self.num_classes) if last else (f"{p}.hidden", tuple(map(float, self.hidden)))
        dout2: Any = float(self.num_classes ** 2) if last else (f"{p}.hidden", tuple(float(h * h) for h in self.hidden))

        def op(table: dict[str, float]) -> tuple[str, tuple[float, ...]]:
            return f"{p}.op", tuple(float(table.get(o, 0)) for o in self.ops)

        def bits(kind: str, scale: float = 1.0) -> tuple[str, tuple[float, ...]]:
            return f"{p}.{kind}", tuple(b * scale for b in getattr(self, kind))

        w_in, gin, gat = op(_WEIGHTS_IN), op({"gin": 1}), op({"gat": 1})
        coef, biases = op(dict.fromkeys(_COEF_OPS, 1)), op(_BIASES)
        skip = (f"{p}.skip", tuple(float(s == "linear") for s in self.skips))
        weights = [(din, dout, w_in), (dout2, gin), (2.0, dout, gat), (din, dout, skip)]  # weight tensors
        macs = [(n, din, dout, w_in), (n, dout2, gin), (2 * n, dout, gat), (n, din, dout, skip)]
        coef_macs = (e_loops, dout, coef) if "c_bits" in self._has(p) else None
        return {
            "params": [_term(*w) for w in weights] + [_term(dout, biases)],
            "size_bytes": [_term(*w, bits("w_bits", 1 / 8)) for w in weights] + [_term(4.0, dout, biases)],
            "macs": [_term(*m) for m in macs] + ([_term(*coef_macs)] if coef_macs else []),
            "bitops": [_term(*m, bits("w_bits"), bits("a_bits")) for m in macs]
            + ([_term(*coef_macs, bits("c_bits"), bits("a_bits"))] if coef_macs else []),
        }

    def _has(self, prefix: str) -> set[str]:
        return {g.name.split(".", 1)[1] for g in self.genes if g.name.startswith(prefix + ".")}


def _term(*parts: Any) -> CostTerm:
    """Multiply constants into ``coef`` and keep gene factors; a gene may not appear twice."""
    coef, factors = 1.0, []
    for part in parts:
        if isinstance(part, tuple):
            factors.append(part)
        else:
            coef *= float(part)
    names = [f[0] for f in factors]
    if len(set(names)) != len(names):
        raise ValueError(f"cost term uses a gene twice: {names}")
    return CostTerm(coef, tuple(factors))
