"""Multi-objective searchers behind one ask/tell interface, built by name from a registry.

``get_searcher("nsga2", space, objectives, constraints=..., seed=0, population_size=50)`` builds one;
:func:`list_searchers` names them all. Importing this package registers the built-in searchers.
"""

from .context import SearchContext
from .base import (Searcher, get_searcher, list_searchers, missing_requirements, register_searcher,
                   searcher_class, searcher_options)

# Importing the modules registers the built-in searchers.
from . import random_search, pymoo_searchers, optuna_searchers, predictor_guided, bit_allocation  # noqa: E402,F401  isort: skip

__all__ = ["SearchContext", "Searcher", "get_searcher", "list_searchers", "missing_requirements", "register_searcher", "searcher_class",
           "searcher_options"]
