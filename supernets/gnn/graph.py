"""The graph as tensors, prepared once per dataset: edges, GCN coefficients, sparse input features.

Why sparse inputs: Planetoid features are bag-of-words, about 1% non-zero (Cora 2708 × 1433,
CiteSeer 3327 × 3703). A dense first layer (and, worse, a dense SAGE/GIN neighbour max over
1433-wide rows) dominates training time on a CPU; on the non-zeros it costs a small fraction of that,
since the work follows the non-zeros. Non-negative
features with < 25% non-zeros are kept as :class:`SparseRows`; quantizing them touches only the
stored values (0 maps to 0 at every width of an unsigned quantizer), and SAGE/GIN aggregate them
through :class:`NeighbourAggregation`, whose index structure is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from search_spaces.errors import InputError

__all__ = ["SparseRows", "NeighbourAggregation", "GraphTensors", "prepare_graph", "sparse_linear"]

SPARSE_DENSITY = 0.25


@dataclass(frozen=True, eq=False)
class SparseRows:
    """Structure of a sparse (num_rows, num_cols) matrix in row-major order; values live apart."""

    row: Tensor  # (nnz,) non-decreasing
    col: Tensor  # (nnz,)
    num_rows: int
    num_cols: int

    @property
    def offsets(self) -> Tensor:
        """Start of every row in ``col`` (``embedding_bag`` offsets), shape (num_rows,)."""
        counts = torch.bincount(self.row, minlength=self.num_rows)
        return torch.cumsum(counts, 0) - counts

    def dense(self, values: Tensor) -> Tensor:
        out = values.new_zeros(self.num_rows, self.num_cols)
        return out.index_put((self.row, self.col), values, accumulate=True)


def sparse_linear(rows: SparseRows, values: Tensor, weight: Tensor, offsets: Tensor | None = None) -> Tensor:
    """``X @ weight`` for X = (rows, values); ``weight`` is (num_cols, out). Differentiable in both."""
    offsets = rows.offsets if offsets is None else offsets
    return F.embedding_bag(rows.col, weight, offsets, mode="sum", per_sample_weights=values)  # (N, out)


class NeighbourAggregation:
    """Add/mean/max of sparse rows over incoming edges, as a sparse result with a fixed structure.

    For every edge ``j -> i`` and every non-zero ``(j, c)`` of the input, the pair lands on output
    entry ``(i, c)``; the (sorted, unique) output entries and each pair's target are computed once.
    Valid for non-negative values (an absent entry is 0 and never exceeds a stored one).
    """

    def __init__(self, rows: SparseRows, src: Tensor, dst: Tensor) -> None:
        counts = torch.bincount(rows.row, minlength=rows.num_rows)
        starts = torch.cumsum(counts, 0) - counts
        per_edge = counts[src]  # (E,) non-zeros carried by each edge
        edge = torch.repeat_interleave(torch.arange(src.numel()), per_edge)
        first = torch.cumsum(per_edge, 0) - per_edge
        self.source = starts[src][edge] + torch.arange(edge.numel()) - first[edge]  # (P,) index into values
        keys = dst[edge] * rows.num_cols + rows.col[self.source]
        unique, self.target = torch.unique(keys, return_inverse=True)  # sorted: row-major output
        self.rows = SparseRows(unique // rows.num_cols, unique % rows.num_cols, rows.num_rows, rows.num_cols)
        self.in_degree = torch.bincount(dst, minlength=rows.num_rows).clamp(min=1).to(torch.float32)
        self.offsets = self.rows.offsets

    def __call__(self, values: Tensor, aggr: str) -> Tensor:
        """Values (aligned with :attr:`rows`) of the aggregated matrix."""
        gathered = values[self.source]  # (P,)
        out = values.new_zeros(self.rows.col.numel())
        if aggr == "max":
            return out.scatter_reduce(0, self.target, gathered, "amax", include_self=False)
        out = out.index_add(0, self.target, gathered)
        return out / self.in_degree[self.rows.row] if aggr == "mean" else out


@dataclass(frozen=True, eq=False)
class GraphTensors:
    """Everything the GNN models read, for one transductive graph."""

    x: Tensor  # (N, F) dense raw features
    row_scale: Tensor | None  # (N,) 1 / row sum: row normalisation applied after quantizing x
    sparse: SparseRows | None  # the non-zeros of x when sparse and non-negative
    sparse_values: Tensor | None  # (nnz,)
    neighbours: NeighbourAggregation | None  # SAGE/GIN aggregation of the sparse features
    edge_index: Tensor  # (2, E) src -> dst, no self loops
    loop_index: Tensor  # (2, E + N) with self loops
    gcn_weight: Tensor  # (E + N,) D^-1/2 (A + I) D^-1/2
    y: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))

    @property
    def num_features(self) -> int:
        return int(self.x.size(1))

    @property
    def nonnegative(self) -> bool:
        return self.sparse is not None or bool((self.x >= 0).all())


def prepare_graph(splits: object, *, normalize_features: bool = True) -> GraphTensors:
    """:class:`GraphTensors` of a :class:`supernets.data.GraphSplits` (self loops removed first).

    ``normalize_features``: Kipf & Welling's row normalisation ``x_i / Σ_c x_ic``, kept as a per-node
    float scale that the models apply *after* quantizing the raw features (``D^-1 (Q(B) W)``), so
    that binary bag-of-words inputs stay exact at every bit-width.
    """
    from torch_geometric.nn.conv.gcn_conv import gcn_norm
    from torch_geometric.utils import add_self_loops, remove_self_loops

    data = getattr(splits, "data", None)
    if data is None or getattr(data, "x", None) is None or getattr(data, "edge_index", None) is None:
        raise InputError("expected graph splits (supernets.data.GraphSplits) with node features and edges",
                         field="dataset")
    x = data.x.float()
    n = x.size(0)
    edge_index, _ = remove_self_loops(data.edge_index)
    loop_index, _ = add_self_loops(edge_index, num_nodes=n)
    _, gcn_weight = gcn_norm(loop_index, None, n, add_self_loops=False)
    sparse = values = neighbours = None
    if bool((x >= 0).all()) and float((x != 0).float().mean()) < SPARSE_DENSITY:
        row, col = x.nonzero(as_tuple=True)
        sparse, values = SparseRows(row, col, n, x.size(1)), x[row, col]
        neighbours = NeighbourAggregation(sparse, edge_index[0], edge_index[1])
    row_scale = None
    if normalize_features:
        row_scale = 1.0 / x.sum(1).abs().clamp(min=1e-12)
        row_scale[x.sum(1) == 0] = 1.0
    return GraphTensors(x, row_scale, sparse, values, neighbours, edge_index, loop_index, gcn_weight, data.y,
                        data.train_mask, data.val_mask, data.test_mask, int(getattr(splits, "num_classes")))
