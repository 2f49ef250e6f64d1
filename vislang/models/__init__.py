"""Models; importing this package registers the built-in builders (see :mod:`vislang.models.registry`)."""

from vislang.models import caption_lstm, caption_transformer, cnn, hf_vision, resnet, vit  # noqa: F401  (registers)
from vislang.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
