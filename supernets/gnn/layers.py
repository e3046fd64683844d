"""The static quantized GNN of one genome, built from torch_geometric layers (retrained with QAT).

Quantization points (bits from the genome's layer genes, LSQ steps from :mod:`supernets.gnn.quant`):

- the layer input at ``a_bits`` (unsigned after ReLU-like activations and for non-negative raw
  features, signed otherwise); raw features are quantized like any activation (binary
  bag-of-words features are exact at every width);
- every weight at ``w_bits``: each ``Linear`` is a :class:`QLinear` (one step per output channel);
  GATConv's attention vectors (one step each) are quantized through ``torch.nn.utils.parametrize``;
- GCN/GAT transformed features at ``a_bits`` (the output quantizer of the conv's ``lin``), before
  the attention logits and the propagation; GIN's inner ReLU output at ``a_bits``;
- coefficients at ``c_bits``: GCN's normalised adjacency ``D^-1/2 (A+I) D^-1/2`` is quantized and
  passed as ``edge_weight`` to ``GCNConv(normalize=False)``; GAT's attention ``alpha`` is quantized
  in :meth:`QGATConv.message`, after the softmax and attention dropout.

Sparse first layer: raw sparse features travel as a torch sparse COO tensor; :class:`QLinear`
multiplies it on its non-zeros, GCNConv/GATConv take it as is, and SAGE/GIN (whose
torch_geometric forward would aggregate 1433-wide dense rows) get their neighbour aggregate from
:class:`~supernets.gnn.graph.NeighbourAggregation` and apply the conv's own weights exactly as
``SAGEConv.forward`` / ``GINConv.forward`` do.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from search_spaces.genome import Genome
from search_spaces.gnn import UNSIGNED_ACTIVATIONS, GnnSpace
from supernets.gnn.graph import GraphTensors, SparseRows, sparse_linear
from supernets.gnn.quant import GnnQuantizer

with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit
    warnings.simplefilter("ignore", FutureWarning)
    from torch_geometric.nn import GATConv, GCNConv, GINConv, SAGEConv
    from torch_geometric.nn.dense.linear import Linear

__all__ = ["activation", "QLinear", "QGATConv", "StaticLayer", "StaticGnn", "weight_count"]


def activation(name: str, x: Tensor) -> Tensor:
    """The activations of :data:`search_spaces.gnn.GNN_ACTIVATIONS` by name."""
    if name == "linear":
        return x
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.2)
    return getattr(F, name)(x) if name != "tanh" else torch.tanh(x)


def _to_sparse(rows: SparseRows, values: Tensor) -> Tensor:
    index = torch.stack([rows.row, rows.col])
    return torch.sparse_coo_tensor(index, values, (rows.num_rows, rows.num_cols), is_coalesced=True,
                                   check_invariants=False)


class QLinear(Linear):
    """torch_geometric ``Linear`` with a fake-quantized weight, an optional output quantizer, sparse input."""

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool, w_bits: int,
                 out_bits: int | None = None, weight_initializer: str | None = "glorot") -> None:
        super().__init__(in_channels, out_channels, bias=bias, weight_initializer=weight_initializer,
                         bias_initializer="zeros" if bias else None)
        self.w_bits, self.out_bits = w_bits, out_bits
        self.wq = GnnQuantizer([w_bits], signed=True, channels=out_channels, axis=0)  # per output channel
        self.oq = None if out_bits is None else GnnQuantizer([out_bits], signed=True)

    def forward(self, x: Tensor) -> Tensor:
        w = self.wq(self.weight, self.w_bits)  # (out, in)
        if x.is_sparse:
            rows = SparseRows(x.indices()[0], x.indices()[1], x.size(0), x.size(1))
            y = sparse_linear(rows, x.values(), w.t())
            y = y if self.bias is None else y + self.bias
        else:
            y = F.linear(x, w, self.bias)
        return y if self.oq is None else self.oq(y, self.out_bits)


class _Quantize(nn.Module):
    """A parametrization: the tensor seen by the module is its fake-quantized value."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits, self.quant = bits, GnnQuantizer([bits], signed=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(x, self.bits)


class QGATConv(GATConv):
    """GATConv whose attention coefficients are fake-quantized to ``c_bits`` (unsigned: alpha >= 0)."""

    def __init__(self, *args: object, c_bits: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.c_bits = c_bits
        self.coef_q = GnnQuantizer([c_bits], signed=False)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return self.coef_q(alpha, self.c_bits).unsqueeze(-1) * x_j


def _build_op(op: str, aggr: str, heads: int, d_in: int, d_out: int, wb: int, ab: int, cb: int,
              dropout: float) -> nn.Module:
    if op == "linear":
        return QLinear(d_in, d_out, bias=True, w_bits=wb)
    if op == "gcn":
        conv = GCNConv(d_in, d_out, aggr=aggr, normalize=False, add_self_loops=False)
        conv.lin = QLinear(d_in, d_out, bias=False, w_bits=wb, out_bits=ab)
        return conv
    if op == "gat":
        conv = QGATConv(d_in, d_out // heads, heads=heads, concat=True, dropout=dropout, aggr=aggr, c_bits=cb)
        conv.lin = QLinear(d_in, d_out, bias=False, w_bits=wb, out_bits=ab)
        for name in ("att_src", "att_dst"):
            parametrize.register_parametrization(conv, name, _Quantize(wb))
        return conv
    if op == "sage":
        conv = SAGEConv(d_in, d_out, aggr=aggr)
        conv.lin_l = QLinear(d_in, d_out, bias=True, w_bits=wb, weight_initializer=None)
        conv.lin_r = QLinear(d_in, d_out, bias=False, w_bits=wb, weight_initializer=None)
        return conv
    if op == "gin":
        mlp = nn.Sequential(QLinear(d_in, d_out, bias=True, w_bits=wb), nn.ReLU(),
                            _ActQuant(ab), QLinear(d_out, d_out, bias=True, w_bits=wb))
        return GINConv(mlp, eps=0.0, train_eps=False, aggr=aggr)
    raise ValueError(f"unknown op {op!r}")


class _ActQuant(nn.Module):
    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits, self.quant = bits, GnnQuantizer([bits], signed=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(x, self.bits)


class StaticLayer(nn.Module):
    """Layer ``i`` of a genome: input quantizer, op, optional linear skip, activation."""

    def __init__(self, space: GnnSpace, genome: Genome, i: int, *, in_unsigned: bool, dropout: float) -> None:
        super().__init__()
        p, self.first, self.last = f"l{i}", i == 1, i == space.num_layers
        d_in = space.in_features if i == 1 else int(genome[f"l{i - 1}.hidden"])
        d_out = space.num_classes if self.last else int(genome[f"{p}.hidden"])
        def gene(name: str, default: Any) -> Any:  # genes a space may not declare (e.g. no GAT, no heads)
            return genome[f"{p}.{name}"] if f"{p}.{name}" in genome else default

        self.op, self.aggr = str(gene("op", "")), str(gene("aggr", "add"))
        heads = int(gene("heads", 1)) if self.op == "gat" else 1
        self.act = "linear" if self.last else str(gene("act", "linear"))
        self.a_bits, self.c_bits = int(genome[f"{p}.a_bits"]), int(gene("c_bits", 32))
        wb, self.dropout = int(genome[f"{p}.w_bits"]), dropout
        self.in_q = GnnQuantizer([self.a_bits], signed=not in_unsigned)
        self.conv = _build_op(self.op, self.aggr, heads, d_in, d_out, wb, self.a_bits, self.c_bits, dropout)
        self.skip = QLinear(d_in, d_out, bias=False, w_bits=wb) if genome[f"{p}.skip"] == "linear" else None
        self.coef_q = GnnQuantizer([self.c_bits], signed=False) if self.op == "gcn" else None

    def forward(self, x: Tensor, graph: GraphTensors) -> Tensor:
        scale = graph.row_scale if self.first else None  # row normalisation after quantization
        if x.is_sparse:
            rows = SparseRows(x.indices()[0], x.indices()[1], x.size(0), x.size(1))
            values = self.in_q(x.values(), self.a_bits)
            values = values if scale is None else values * scale[rows.row]
            x = _to_sparse(rows, F.dropout(values, self.dropout, self.training))
        else:
            x = self.in_q(x, self.a_bits)
            x = F.dropout(x if scale is None else x * scale.unsqueeze(1), self.dropout, self.training)
        h = self._op(x, graph)
        if self.skip is not None:
            h = h + self.skip(x)
        return activation(self.act, h)

    def _op(self, x: Tensor, graph: GraphTensors) -> Tensor:
        if self.op == "linear":
            return self.conv(x)
        if self.op == "gcn":
            assert self.coef_q is not None
            return self.conv(x, graph.loop_index, self.coef_q(graph.gcn_weight, self.c_bits))
        if self.op == "gat" or not x.is_sparse:
            return self.conv(x, graph.edge_index)
        assert graph.neighbours is not None, "sparse input without its neighbour aggregation"
        agg = _to_sparse(graph.neighbours.rows, graph.neighbours(x.values(), self.aggr))
        if self.op == "sage":  # SAGEConv.forward: lin_l(aggregate) + lin_r(root)
            return self.conv.lin_l(agg) + self.conv.lin_r(x)
        return self.conv.nn((x + agg).coalesce())  # GINConv.forward with eps = 0: nn(aggregate + root)


class StaticGnn(nn.Module):
    """The full-batch GNN of one genome on one graph; ``forward()`` returns logits (N, C)."""

    def __init__(self, space: GnnSpace, genome: Genome, graph: GraphTensors, *, dropout: float = 0.5) -> None:
        super().__init__()
        space.validate(genome)
        layers, unsigned = [], graph.nonnegative
        for i in range(1, space.num_layers + 1):
            layers.append(StaticLayer(space, genome, i, in_unsigned=unsigned, dropout=dropout))
            unsigned = layers[-1].act in UNSIGNED_ACTIVATIONS
        self.layers = nn.ModuleList(layers)
        self.graph = graph

    def forward(self) -> Tensor:
        g = self.graph
        x = _to_sparse(g.sparse, g.sparse_values) if g.sparse is not None and g.sparse_values is not None else g.x
        for layer in self.layers:
            x = layer(x, g)
        return x  # (N, C)


def weight_count(model: nn.Module) -> int:
    """Parameters of the network itself (quantizer steps excluded): what ``space.costs().params`` counts."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.endswith(".log_step"))
