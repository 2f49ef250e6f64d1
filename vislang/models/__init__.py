"""Models; importing this package registers the built-in families and variants (see :mod:`vislang.models.registry`)."""

from vislang.models import (  # noqa: F401  (registers)
    caption_lstm,
    caption_rag,
    caption_transformer,
    cnn,
    diffusion_unet,
    dual_encoder,
    dual_encoder_ensemble,
    fusion_model,
    hf_vision,
    region_tagger,
    resnet,
    text_encoders,
    vit,
)
from vislang.models.registry import (
    create_model,
    describe_model,
    list_models,
    model_config,
    model_family,
    register_family,
    register_model,
)

__all__ = ["create_model", "describe_model", "list_models", "model_config", "model_family", "register_family",
           "register_model"]
