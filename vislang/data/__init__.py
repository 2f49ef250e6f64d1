"""Datasets: built-in real and procedural data, readers for users' files, images, text and loaders."""

from vislang.data.dataset import ImageTextDataset, load_dataset
from vislang.data.records import QA, Record
from vislang.data.registry import (
    PrepareContext,
    get_dataset_info,
    list_datasets,
    prepare_dataset,
    read_summary,
    register_dataset,
)

# isort: split
from vislang.data import datasets  # noqa: F401  (importing it registers the built-in datasets)

__all__ = [
    "QA",
    "ImageTextDataset",
    "PrepareContext",
    "Record",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "prepare_dataset",
    "read_summary",
    "register_dataset",
]
