"""Dataset registry: ``load_dataset(name)`` returns deterministic, normalised train/val/test splits.

Image datasets (``digits``, ``mnist``, ``cifar10``, ``imagefolder``: a class tree of the user's files) return
:class:`ImageSplits`; graph datasets (``cora``, ``citeseer``) return :class:`GraphSplits`; the character-level
text dataset ``tinyshakespeare`` returns :class:`TextSplits` (next-character windows). Files are found under an
explicit ``root``, else ``$QNAS_DATA``; ``digits`` is embedded in scikit-learn and needs neither.
"""

from supernets.data import graphs as _graphs  # noqa: F401 - registers cora, citeseer
from supernets.data import imagefolder as _imagefolder  # noqa: F401 - registers imagefolder
from supernets.data import images as _images  # noqa: F401 - registers digits, mnist, cifar10
from supernets.data import text as _text  # noqa: F401 - registers tinyshakespeare
from supernets.data.registry import (
    GraphSplits,
    ImageSplits,
    TextSplits,
    dataset_kind,
    list_datasets,
    load_dataset,
    register_dataset,
    resolve_data_root,
)

__all__ = [
    "GraphSplits",
    "ImageSplits",
    "TextSplits",
    "dataset_kind",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "resolve_data_root",
]
