"""Generic building blocks shared by the image encoders, text models, fusion and decoders."""

from vislang.layers.attention import MultiHeadAttention
from vislang.layers.drop import DropPath
from vislang.layers.mixstyle import MixStyle
from vislang.layers.mlp import MLP
from vislang.layers.norm import LayerNorm2d
from vislang.layers.patch import PatchEmbed, resize_pos_embed
from vislang.layers.transformer import TransformerDecoderBlock, TransformerEncoderBlock, token_layers

__all__ = [
    "MLP",
    "MixStyle",
    "DropPath",
    "LayerNorm2d",
    "MultiHeadAttention",
    "PatchEmbed",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "resize_pos_embed",
    "token_layers",
]
