"""LPGNAS: differentiable joint architecture + quantization search for GNNs (``gnn`` search space).

- :mod:`~supernets.gnn.quant`: LSQ fake quantization at 1/2/4/8/16/32 bits, and bit mixtures;
- :mod:`~supernets.gnn.graph`: the graph as tensors (GCN coefficients, sparse input features);
- :mod:`~supernets.gnn.layers`: the static quantized GNN of one genome (torch_geometric layers);
- :mod:`~supernets.gnn.supernet`: the mixed-op supernet with α/β logits and expected costs;
- :mod:`~supernets.gnn.train`: alternating search, argmax derivation, QAT retraining.

torch_geometric is imported by these modules only (importing :mod:`supernets` alone does not).
"""

from supernets.gnn.graph import GraphTensors, prepare_graph
from supernets.gnn.layers import StaticGnn, weight_count
from supernets.gnn.quant import GNN_BITS, GnnQuantizer, check_bits, fake_quant, mixed_fake_quant
from supernets.gnn.supernet import GnnSupernet, check_graph
from supernets.gnn.train import (EpochLog, NonFiniteLossError, RetrainOutcome, RetrainSettings, SearchOutcome,
                                 SearchSettings, cost_penalty, design_penalty, retrain, retrain_seeds, search,
                                 search_objective, temperature)

__all__ = [
    "GNN_BITS", "EpochLog", "GnnQuantizer", "GnnSupernet", "GraphTensors", "NonFiniteLossError", "RetrainOutcome",
    "RetrainSettings", "SearchOutcome", "SearchSettings", "StaticGnn", "check_bits", "check_graph", "cost_penalty",
    "design_penalty", "fake_quant", "mixed_fake_quant", "prepare_graph", "retrain", "retrain_seeds", "search",
    "search_objective", "temperature", "weight_count",
]
