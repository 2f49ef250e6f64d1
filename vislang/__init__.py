"""vislang: image-text multimodal learning, offline-first and fast on CPU."""

from vislang.data import ImageTextDataset, list_datasets, load_dataset, prepare_dataset
from vislang.data.records import QA, Record

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy or optional modules load on first use: ``vislang.Index`` needs FAISS.
    if name == "Index":
        from vislang.index import Index

        return Index
    raise AttributeError(f"module 'vislang' has no attribute {name!r}")


__all__ = [
    "QA",
    "ImageTextDataset",
    "Index",
    "Record",
    "__version__",
    "list_datasets",
    "load_dataset",
    "prepare_dataset",
]
