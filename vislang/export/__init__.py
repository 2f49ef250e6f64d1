"""Exporting trained models to ONNX or ``torch.export`` (``vislang export``), every graph checked against the
eager model; :mod:`vislang.inference.runtime` runs them behind the usual predictors."""

from vislang.export.exporter import TOLERANCE, export_model
from vislang.export.folder import export_folder

__all__ = ["TOLERANCE", "export_folder", "export_model"]
