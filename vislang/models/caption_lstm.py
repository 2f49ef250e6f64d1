"""Show, Attend and Tell: an LSTM caption decoder with soft attention over an image feature grid.

Reference: K. Xu, J. Ba, R. Kiros, K. Cho, A. Courville, R. Salakhutdinov, R. Zemel, Y. Bengio,
"Show, Attend and Tell: Neural Image Caption Generation with Visual Attention", ICML 2015.
Weight tying (option ``tie_embeddings``): O. Press, L. Wolf, "Using the Output Embedding to Improve Language
Models", EACL 2017.

Per step t, with grid features ``a_i`` (i over the N grid cells) and the previous hidden state ``h``:
soft additive attention ``alpha = softmax_i(w . tanh(W_a a_i + W_h h))``, a gating scalar
``beta = sigmoid(f_beta(h))`` scaling the context ``z = beta * sum_i alpha_i a_i``, an LSTM step on
``[E y_{t-1}; z]``, and the deep output layer ``p(y_t) = softmax(L_o(E y_{t-1} + L_h h_t + L_z z))``.
The doubly stochastic attention regulariser lives in :class:`vislang.losses.CaptionLoss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vislang.decoding import DecoderState, teacher_force
from vislang.models.encoders import ImageFeatures
from vislang.models.registry import create_model, register_family, register_model


@dataclass
class CaptionLSTMConfig:
    """Sizes of the captioner.

    Attributes:
        vocab_size: Output vocabulary, specials included.
        encoder: Registered image encoder name.
        encoder_kwargs: Options of the encoder (e.g. ``weights``), checked when it is built.
        embed_dim: Word embedding size.
        hidden_dim: LSTM hidden size.
        attention_dim: Hidden size of the additive attention.
        dropout: Dropout before the output layer.
        tie_embeddings: Share the word embedding with the output layer ``L_o`` (Press & Wolf 2017), so a rare
            word's vector learns both from being read and from being predicted.
        pad_id: Padding token id (ignored by the loss, never generated).
        bos_id: Start token id.
        eos_id: End token id.
    """

    vocab_size: int = 2000
    encoder: str = "cnn_small"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.3
    tie_embeddings: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


class CaptionOutput(NamedTuple):
    """Teacher-forced outputs."""

    logits: Tensor  # (B, T, V)
    attention: Tensor | None  # (B, T, N), None for decoders without image attention


class SoftAttention(nn.Module):
    """Additive (Bahdanau) attention of a query vector over a set of features."""

    def __init__(self, feat_dim: int, query_dim: int, attention_dim: int):
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project(self, feats: Tensor) -> Tensor:
        """Precompute ``W_a a`` once per image: (B, N, D) -> (B, N, A)."""
        return self.feat_proj(feats)

    def forward(self, feats: Tensor, feats_proj: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        e = self.score(torch.tanh(feats_proj + self.query_proj(query).unsqueeze(1))).squeeze(-1)  # (B, N)
        alpha = e.softmax(dim=-1)  # (B, N)
        context = torch.bmm(alpha.unsqueeze(1), feats).squeeze(1)  # (B, D)
        return context, alpha


class CaptionLSTM(nn.Module):
    """Image encoder + attention LSTM decoder.

    Args:
        image_encoder: Module mapping ``(B, 3, H, W)`` images to :class:`ImageFeatures`, with ``out_dim``.
        cfg: Decoder sizes and special token ids.
    """

    def __init__(self, image_encoder: nn.Module, cfg: CaptionLSTMConfig):
        super().__init__()
        d = image_encoder.out_dim
        self.image_encoder = image_encoder
        self.pad_id, self.bos_id, self.eos_id = cfg.pad_id, cfg.bos_id, cfg.eos_id
        self.vocab_size = cfg.vocab_size
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.attention = SoftAttention(d, cfg.hidden_dim, cfg.attention_dim)
        self.init_h = nn.Linear(d, cfg.hidden_dim)
        self.init_c = nn.Linear(d, cfg.hidden_dim)
        self.f_beta = nn.Linear(cfg.hidden_dim, 1)
        self.lstm = nn.LSTMCell(cfg.embed_dim + d, cfg.hidden_dim)
        self.out_h = nn.Linear(cfg.hidden_dim, cfg.embed_dim)  # L_h
        self.out_z = nn.Linear(d, cfg.embed_dim)  # L_z
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.embed_dim, cfg.vocab_size)  # L_o
        if cfg.tie_embeddings:  # one (V, E) tensor, initialised at the output layer's scale, not N(0, 1)
            nn.init.normal_(self.embed.weight, std=cfg.embed_dim ** -0.5)
            with torch.no_grad():
                self.embed.weight[cfg.pad_id].zero_()
            self.out.weight = self.embed.weight

    def encode(self, images: Tensor) -> ImageFeatures:
        return self.image_encoder(images)

    def init_state(self, feats: ImageFeatures) -> DecoderState:
        grid = feats.grid  # (B, N, D)
        mean = grid.mean(dim=1)  # (B, D)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H)
        return DecoderState({"h": h, "c": c}, {"grid": grid, "grid_proj": self.attention.project(grid)})

    def step(self, prev: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, DecoderState]:
        """One decoding step.

        Args:
            prev: Previous tokens (B,).
            state: Decoder state.

        Returns:
            Logits (B, V), attention weights (B, N), next state.
        """
        h, c = state.dynamic["h"], state.dynamic["c"]
        emb = self.embed(prev)  # (B, E)
        context, alpha = self.attention(state.static["grid"], state.static["grid_proj"], h)  # (B, D), (B, N)
        z = torch.sigmoid(self.f_beta(h)) * context  # gated context (B, D)
        h, c = self.lstm(torch.cat([emb, z], dim=-1), (h, c))
        logits = self.out(self.dropout(emb + self.out_h(h) + self.out_z(z)))  # (B, V)
        return logits, alpha, DecoderState({"h": h, "c": c}, state.static)

    def forward(self, images: Tensor, tokens: Tensor) -> CaptionOutput:
        """Teacher forcing: predict ``tokens[:, 1:]`` from ``tokens[:, :-1]``.

        Args:
            images: (B, 3, H, W).
            tokens: (B, T) starting with BOS, padded with ``pad_id``.

        Returns:
            Logits (B, T-1, V) and attention (B, T-1, N).
        """
        state = self.init_state(self.encode(images))
        return CaptionOutput(*teacher_force(self, state, tokens))


@register_family("caption_lstm", CaptionLSTMConfig)
def build_caption_lstm(cfg: CaptionLSTMConfig) -> CaptionLSTM:
    """The image encoder ``cfg.encoder`` from the registry, then the decoder."""
    return CaptionLSTM(create_model(cfg.encoder, **cfg.encoder_kwargs), cfg)


register_model("caption_lstm", "caption_lstm", "Show, Attend and Tell with the small CNN encoder (64 px images, "
               "8x8 grid).")
register_model("caption_lstm_resnet50", "caption_lstm", "Show, Attend and Tell on a ResNet-50 grid (load "
               'torchvision weights with ``encoder_kwargs={"weights": "resnet50.pth"}``).', encoder="resnet50")
register_model("caption_lstm_tiny", "caption_lstm", "A few-thousand-parameter variant for tests.",
               vocab_size=50, encoder="cnn_tiny", embed_dim=16, hidden_dim=24, attention_dim=16, dropout=0.0)
