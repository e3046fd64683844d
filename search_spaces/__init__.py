"""Search spaces: the genome (architecture + quantization genes), concrete spaces and analytic costs.

Pure Python and NumPy: importing this package never imports torch, torch_geometric or ray.
"""

from .blocks import BlockSpec, make_divisible
from .costs import Costs, block_costs, model_costs
from .errors import InputError, QnasError
from .genome import Gene, Genome
from .registry import get_space, list_spaces, register_space, space_from_dict
from .space import SearchSpace

# Importing the modules registers the built-in spaces.
from . import gnn, mbv3, meta, resnet, transformer  # noqa: E402,F401  isort: skip

__all__ = [
    "BlockSpec", "Costs", "Gene", "Genome", "InputError", "QnasError", "SearchSpace",
    "block_costs", "get_space", "list_spaces", "make_divisible", "model_costs", "register_space",
    "space_from_dict",
]
