"""The LPGNAS supernet: every layer computes all candidate choices and mixes them by probability.

Relaxation: each gene ``g`` of the ``gnn`` space has logits (architecture genes: α, quantization
genes: β); its probabilities are ``softmax(logits / τ)``, or ``softmax((logits + Gumbel noise) / τ)``
with ``gumbel=True``, τ annealed by the trainer. How each gene is mixed:

- ``op``, ``act``, ``skip``: probability-weighted sum of the candidates' outputs (DARTS);
- ``aggr``: per op, the sum of add/mean/max aggregates (add and mean share one scatter);
- ``heads`` (GAT): attention computed for every head count over one shared weight, channel ``c``
  belonging to head ``c mod k``, so the first ``h`` channels split evenly over ``k`` heads (the
  static GATConv lays heads out head-major; the design is retrained from scratch, so only the
  structure has to match, not the channel order);
- ``hidden``: FBNetV2 channel masking: weights are allocated at the widest choice and channel ``c``
  is scaled by ``P(hidden > c)`` (applied to the transformed features and the layer output);
- bits: ``Σ_b p_b · Q_b(x)`` with one LSQ step per width (:meth:`GnnQuantizer.mixed`).

Costs: :meth:`GnnSupernet.expected_cost` evaluates the space's own cost monomials on the gene
probabilities, the exact expectation of ``space.costs`` under independent choices, so it is
differentiable in α and β and matches the reported cost of the derived design at one-hot.

Sparse first layer (see :mod:`supernets.gnn.graph`): the quantized raw features are detached, so
the weight gradient is cheap but neither the first layer's input step nor its ``a_bits`` logits get a
cross-entropy gradient (only the cost term moves them). For binary bag-of-words features every
width represents the input exactly, so that gradient is zero anyway. Dense inputs are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.genome import Genome
from search_spaces.gnn import UNSIGNED_ACTIVATIONS, GnnSpace
from supernets.gnn.graph import GraphTensors, sparse_linear
from supernets.gnn.layers import activation
from supernets.gnn.quant import GnnQuantizer

__all__ = ["MixedLayer", "GnnSupernet"]

Probs = dict[str, Tensor]


def _used(p: Tensor, i: int) -> bool:
    """Whether choice ``i`` contributes (skipped only when its probability is exactly 0, one-hot)."""
    return p.requires_grad or float(p[i]) != 0.0


def _mix_aggregate(msg: Tensor, dst: Tensor, n: int, aggrs: tuple[str, ...], p: Tensor) -> Tensor:
    """``Σ_a p_a · AGG_a(msg -> dst)`` over add/mean/max; (E, d) -> (N, d)."""
    from torch_geometric.utils import scatter

    out: Tensor | None = None
    total = None
    for i, aggr in enumerate(aggrs):
        if not _used(p, i):
            continue
        if aggr == "max":
            y = scatter(msg, dst, 0, dim_size=n, reduce="max")
        else:
            total = scatter(msg, dst, 0, dim_size=n, reduce="sum") if total is None else total
            y = total if aggr == "add" else total / torch.bincount(dst, minlength=n).clamp(min=1).unsqueeze(1)
        out = p[i] * y if out is None else out + p[i] * y
    assert out is not None, "no aggregation has probability > 0"
    return out


class MixedLayer(nn.Module):
    """All candidates of layer ``i``, weights at the widest width (input width ``d_in``)."""

    def __init__(self, space: GnnSpace, i: int, d_in: int, *, in_unsigned: bool) -> None:
        super().__init__()
        self.space, self.p, self.first, self.last = space, f"l{i}", i == 1, i == space.num_layers
        self.d_out = space.num_classes if self.last else max(space.hidden)
        ops, d = space.ops, self.d_out
        shapes = {"linear": (d_in, d), "gcn": (d_in, d), "gat": (d_in, d), "sage_r": (d_in, d),
                  "gin1": (d_in, d), "sage_l": (d_in, d), "gin2": (d, d), "att_src": (d,), "att_dst": (d,)}
        wanted = {"linear": ["linear"], "gcn": ["gcn"], "gat": ["gat", "att_src", "att_dst"],
                  "sage": ["sage_r", "sage_l"], "gin": ["gin1", "gin2"]}
        names = [n for op in ops for n in wanted[op]] + (["skip"] if "linear" in space.skips else [])
        shapes["skip"] = (d_in, d)
        self.weights = nn.ParameterDict({n: nn.Parameter(torch.empty(shapes[n])) for n in names})
        bias_names = {"linear": ["linear"], "gcn": ["gcn"], "gat": ["gat"], "sage": ["sage"], "gin": ["gin1", "gin2"]}
        self.biases = nn.ParameterDict({n: nn.Parameter(torch.zeros(d)) for op in ops for n in bias_names[op]})
        self.wq = nn.ModuleDict({n: GnnQuantizer(space.w_bits, signed=True, channels=d if len(shapes[n]) == 2 else None,
                                                 axis=1) for n in names})  # per output channel, like QLinear
        self.in_q = GnnQuantizer(space.a_bits, signed=not in_unsigned)
        self.msg_q = nn.ModuleDict({o: GnnQuantizer(space.a_bits, signed=True) for o in ("gcn", "gat") if o in ops})
        self.coef_q = nn.ModuleDict({o: GnnQuantizer(space.c_bits, signed=False) for o in ("gcn", "gat") if o in ops})
        self.gin_q = GnnQuantizer(space.a_bits, signed=False) if "gin" in ops else None
        self.from_input = [n for n in ("linear", "gcn", "gat", "sage_r", "sage_l", "gin1", "skip") if n in names]
        self.from_aggregate = [n for n in ("sage_l", "gin1") if n in names]
        for w in self.weights.values():
            nn.init.xavier_uniform_(w.view(1, -1) if w.dim() == 1 else w)
        self._sparse_offsets: Tensor | None = None

    def mask(self, probs: Probs) -> Tensor | None:
        """Soft channel mask ``P(hidden > c)``, shape (d_out,); None for the classifier layer."""
        if self.last:
            return None
        p = probs[f"{self.p}.hidden"]
        widths = torch.tensor(self.space.hidden).unsqueeze(1)  # (H, 1)
        return ((torch.arange(self.d_out).unsqueeze(0) < widths).float() * p.unsqueeze(1)).sum(0)

    def forward(self, x: Tensor | None, probs: Probs, graph: GraphTensors, dropout: float) -> Tensor:
        """``x`` is None for the sparse first layer (read from ``graph``); returns (N, d_out)."""
        g = {name.split(".", 1)[1]: p for name, p in probs.items() if name.startswith(self.p + ".")}
        w = {n: self.wq[n].mixed(p, g["w_bits"]) for n, p in self.weights.items()}
        mask = self.mask(probs)
        t = self._transform(x, graph, w, g, dropout)  # name -> (N, d_out)
        if mask is not None:
            t = {n: v * mask for n, v in t.items()}
        y = self._mix_ops(t, w, g, graph, dropout, mask)
        if "skip" in t:
            y = y + g["skip"][self.space.skips.index("linear")] * t["skip"]
        if not self.last:
            y = sum(g["act"][i] * activation(a, y) for i, a in enumerate(self.space.activations) if _used(g["act"], i))
            y = y * mask
        return y

    def _transform(self, x: Tensor | None, graph: GraphTensors, w: Probs, g: Probs, dropout: float) -> Probs:
        """Input-side matmuls (one fused product) and, for SAGE/GIN, ``Σ_a p_a AGG_a(x) @ W``.

        Add/mean commute with the weights, so they aggregate the transformed features (d_out wide);
        max aggregates the inputs first (through the sparse neighbour structure for raw features).
        """
        fused = torch.cat([w[n] for n in self.from_input], dim=1)  # (d_in, k * d_out)
        if x is None:  # sparse raw features: quantized values detached (see module doc)
            rows, values = graph.sparse, graph.sparse_values
            assert rows is not None and values is not None
            xq = self.in_q.mixed(values, g["a_bits"]).detach()  # (nnz,)
            xq = xq if graph.row_scale is None else xq * graph.row_scale[rows.row]
            xq = F.dropout(xq, dropout, self.training)
            out = sparse_linear(rows, xq, fused, self._offsets(graph))
        else:
            xq = self.in_q.mixed(x, g["a_bits"])  # (N, d_in)
            if self.first and graph.row_scale is not None:
                xq = xq * graph.row_scale.unsqueeze(1)
            xq = F.dropout(xq, dropout, self.training)
            out = xq @ fused
        parts = dict(zip(self.from_input, out.split(self.d_out, dim=1)))
        if self.from_aggregate:
            agg = self._aggregate(x is None, xq, torch.cat([parts[n] for n in self.from_aggregate], dim=1),
                                  torch.cat([w[n] for n in self.from_aggregate], dim=1), graph, g["aggr"])
            parts.update({f"agg_{n}": v for n, v in zip(self.from_aggregate, agg.split(self.d_out, dim=1))})
        return parts

    def _aggregate(self, sparse: bool, xq: Tensor, t: Tensor, weight: Tensor, graph: GraphTensors,
                   p: Tensor) -> Tensor:
        """``Σ_a p_a · AGG_a(x) @ weight`` given ``t = x @ weight`` (N, k) over neighbours (no self loops)."""
        from torch_geometric.utils import scatter

        src, dst = graph.edge_index
        n, out, total = t.size(0), None, None
        for i, aggr in enumerate(self.space.aggregations):
            if not _used(p, i):
                continue
            if aggr == "max" and sparse:
                nb = graph.neighbours
                assert nb is not None
                y = sparse_linear(nb.rows, nb(xq, "max"), weight, nb.offsets)
            elif aggr == "max":
                y = scatter(xq[src], dst, 0, dim_size=n, reduce="max") @ weight
            else:
                total = scatter(t[src], dst, 0, dim_size=n, reduce="sum") if total is None else total
                y = total if aggr == "add" else total / torch.bincount(dst, minlength=n).clamp(min=1).unsqueeze(1)
            out = p[i] * y if out is None else out + p[i] * y
        assert out is not None, "no aggregation has probability > 0"
        return out

    def _offsets(self, graph: GraphTensors) -> Tensor:
        if self._sparse_offsets is None:
            assert graph.sparse is not None
            self._sparse_offsets = graph.sparse.offsets
        return self._sparse_offsets

    def _mix_ops(self, t: Probs, w: Probs, g: Probs, graph: GraphTensors, dropout: float,
                 mask: Tensor | None) -> Tensor:
        pop, out = g["op"], None
        for i, op in enumerate(self.space.ops):
            if _used(pop, i):
                y = pop[i] * getattr(self, f"_op_{op}")(t, w, g, graph, dropout, mask)
                out = y if out is None else out + y
        assert out is not None
        return out

    def _op_linear(self, t: Probs, w: Probs, g: Probs, graph: GraphTensors, dropout: float,
                   mask: Tensor | None) -> Tensor:
        return t["linear"] + self.biases["linear"]

    def _op_gcn(self, t: Probs, w: Probs, g: Probs, graph: GraphTensors, dropout: float,
                mask: Tensor | None) -> Tensor:
        m = self.msg_q["gcn"].mixed(t["gcn"], g["a_bits"])  # (N, d)
        coef = self.coef_q["gcn"].mixed(graph.gcn_weight, g["c_bits"])  # (E',)
        src, dst = graph.loop_index
        y = _mix_aggregate(coef.unsqueeze(1) * m[src], dst, m.size(0), self.space.aggregations, g["aggr"])
        return y + self.biases["gcn"]

    def _op_gat(self, t: Probs, w: Probs, g: Probs, graph: GraphTensors, dropout: float,
                mask: Tensor | None) -> Tensor:
        from torch_geometric.utils import softmax

        m = self.msg_q["gat"].mixed(t["gat"], g["a_bits"])  # (N, d)
        src, dst = graph.loop_index
        heads, ph = (self.space.heads, g["heads"]) if "heads" in g else ((1,), torch.ones(1))
        n, d, out = m.size(0), self.d_out, None
        m_src = m[src]  # (E', d), shared by every head count
        for j, k in enumerate(heads):
            if not _used(ph, j):
                continue
            a_src = (m * w["att_src"]).view(n, d // k, k).sum(1)  # (N, k): channel c -> head c % k
            a_dst = (m * w["att_dst"]).view(n, d // k, k).sum(1)
            alpha = softmax(F.leaky_relu(a_src[src] + a_dst[dst], 0.2), dst, num_nodes=n)  # (E', k)
            alpha = self.coef_q["gat"].mixed(F.dropout(alpha, dropout, self.training), g["c_bits"])
            msg = (m_src.view(-1, d // k, k) * alpha.unsqueeze(1)).view(-1, d)  # (E', d)
            y = ph[j] * _mix_aggregate(msg, dst, n, self.space.aggregations, g["aggr"])
            out = y if out is None else out + y
        assert out is not None
        return out + self.biases["gat"]

    def _op_sage(self, t: Probs, w: Probs, g: Probs, graph: GraphTensors, dropout: float,
                 mask: Tensor | None) -> Tensor:
        return t["agg_sage_l"] + self.biases["sage"] + t["sage_r"]

    def _op_gin(self, t: Probs, w: Probs, g: Probs, graph: GraphTensors, dropout: float,
                mask: Tensor | None) -> Tensor:
        z = torch.relu(t["gin1"] + t["agg_gin1"] + self.biases["gin1"])
        z = z if mask is None else z * mask
        assert self.gin_q is not None
        z = self.gin_q.mixed(z, g["a_bits"])
        return z @ w["gin2"] + self.biases["gin2"]


def _key(gene: str) -> str:
    return gene.replace(".", "__")  # ParameterDict keys may not contain dots


class GnnSupernet(nn.Module):
    """All mixed layers of a ``gnn`` space on one graph, plus one logit vector per gene.

    ``forward(probs)`` returns class logits (N, C) for gene probabilities from :meth:`gene_probs`
    (or :meth:`one_hot` for a single design); :meth:`expected_cost` and :meth:`derive` read them.
    """

    def __init__(self, space: GnnSpace, graph: GraphTensors) -> None:
        super().__init__()
        check_graph(space, graph)
        self.space, self.graph = space, graph
        layers, d_in, unsigned = [], space.in_features, graph.nonnegative
        for i in range(1, space.num_layers + 1):
            layers.append(MixedLayer(space, i, d_in, in_unsigned=unsigned))
            d_in, unsigned = layers[-1].d_out, all(a in UNSIGNED_ACTIVATIONS for a in space.activations)
        self.layers = nn.ModuleList(layers)
        self.logits = nn.ParameterDict({_key(g.name): nn.Parameter(torch.zeros(len(g.choices))) for g in space.genes})
        self._terms = {m: [(t.coef, [(n, torch.tensor(tab)) for n, tab in t.factors]) for t in space.cost_terms(m)]
                       for m in ("size_bytes", "bitops")}

    def weight_parameters(self) -> list[nn.Parameter]:
        """Network weights and quantizer steps (trained on the training nodes)."""
        return list(self.layers.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        """α and β (trained on the validation nodes)."""
        return list(self.logits.parameters())

    def gene_probs(self, tau: float = 1.0, *, gumbel: bool = False,
                   generator: torch.Generator | None = None) -> Probs:
        """``softmax((logits [+ Gumbel noise]) / tau)`` per gene; noise drawn from ``generator`` only."""
        probs = {}
        for gene in self.space.genes:
            z = self.logits[_key(gene.name)]
            if gumbel:
                u = torch.rand(z.shape, generator=generator).clamp(1e-10, 1 - 1e-10)
                z = z - torch.log(-torch.log(u))
            probs[gene.name] = torch.softmax(z / tau, dim=0)
        return probs

    @staticmethod
    def sample(probs: Probs, generator: torch.Generator | None = None) -> Probs:
        """One design drawn gene by gene from ``probs``, as one-hot vectors (single-path training)."""
        return {name: F.one_hot(torch.multinomial(p.detach(), 1, generator=generator)[0], p.numel()).float()
                for name, p in probs.items()}

    def one_hot(self, genome: Genome) -> Probs:
        """Probabilities that select exactly ``genome`` (the derived design inside the supernet)."""
        self.space.validate(genome)
        return {g.name: F.one_hot(torch.tensor(g.choices.index(genome[g.name])), len(g.choices)).float()
                for g in self.space.genes}

    def forward(self, probs: Probs, *, dropout: float = 0.0) -> Tensor:
        x = None if self.graph.sparse is not None else self.graph.x
        for layer in self.layers:
            x = layer(x, probs, self.graph, dropout)
        assert x is not None
        return x  # (N, C)

    def expected_cost(self, probs: Probs, metric: str) -> Tensor:
        """E[metric] (``size_bytes`` or ``bitops``) under independent choices with these probabilities."""
        total = torch.zeros(())
        for coef, factors in self._terms[metric]:
            term = torch.full((), coef)
            for name, table in factors:
                term = term * (probs[name] * table).sum()
            total = total + term
        return total

    def derive(self) -> Genome:
        """The argmax design (a canonical genome of the space)."""
        values = {g.name: g.choices[int(torch.argmax(self.logits[_key(g.name)]))] for g in self.space.genes}
        return self.space.make(values)


def check_graph(space: GnnSpace, graph: GraphTensors) -> None:
    """The space's input/output widths must be the graph's (InputError naming the option otherwise)."""
    from search_spaces.errors import InputError

    for option, want in (("in_features", graph.num_features), ("num_classes", graph.num_classes)):
        if getattr(space, option) != want:
            raise InputError(f"got {getattr(space, option)}, but the dataset has {want}; set it to {want}",
                             field=f"search_space.options.{option}")
