"""vislang: image-text multimodal learning, offline-first and fast on CPU."""

from vislang.data import ImageTextDataset, list_datasets, load_dataset, prepare_dataset
from vislang.data.records import QA, Record

__version__ = "0.1.0"

__all__ = [
    "QA",
    "ImageTextDataset",
    "Record",
    "__version__",
    "list_datasets",
    "load_dataset",
    "prepare_dataset",
]
