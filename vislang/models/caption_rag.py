"""A retrieval-augmented captioner: an attention LSTM that also reads the captions of the k nearest training
images and can copy words from them.

References: J. Devlin et al., "Exploring Nearest Neighbor Approaches for Image Captioning", 2015 (the
nearest-neighbour captions as a strong system); A. See, P. Liu, C. Manning, "Get To The Point: Summarization
with Pointer-Generator Networks", ACL 2017 (the copy gate); R. Ramos et al., "SmallCap: Lightweight Image
Captioning Prompted with Retrieval Augmentation", CVPR 2023 (captioning conditioned on retrieved captions).

The model keeps a memory of the training images: their L2-normalised pooled features ``(M, D)`` from its
image encoder (frozen in training, so the keys stay valid), the token ids of one caption each ``(M, L)``
and a group id each (e.g. the base emoji). For an image it looks up the ``k`` most similar memory entries;
their caption tokens, embedded with the neighbour's rank, the token's position and the similarity, are a
second set the decoder attends over. Each step mixes the vocabulary distribution with a copy distribution,
the attention over the neighbours' tokens:
``p(w) = g * softmax(L_o(...))_w + (1 - g) * sum_{j: token_j = w} a_j``, ``g = sigmoid(w . [h; z; c; E y])``.
In training the image's own entry is never a neighbour, and with probability ``exclude_group`` neither is
any entry of its group, so the model learns both to copy (a known concept in a new style) and to compose (a
concept it has never seen). The memory lives in buffers: it is saved and loaded with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vislang.decoding import DecoderState, teacher_force
from vislang.models.caption_lstm import CaptionOutput, SoftAttention
from vislang.models.encoders import ImageFeatures
from vislang.models.registry import create_model, register_family, register_model


@dataclass
class CaptionRAGConfig:
    """Sizes of the retrieval-augmented captioner.

    Attributes:
        vocab_size: Output vocabulary, specials included.
        encoder: Registered image encoder name.
        encoder_kwargs: Options of the encoder (e.g. ``pretrained``), checked when it is built.
        embed_dim: Word embedding size.
        hidden_dim: LSTM hidden size.
        attention_dim: Hidden size of both additive attentions.
        dropout: Dropout before the output layer.
        neighbours: Nearest training images read per image (``k``).
        memory_size: Entries in the memory (set by the captioning task from the training data).
        memory_len: Tokens kept of each memory caption (EOS included).
        exclude_group: In training, the probability that no entry of the image's own group is a neighbour.
        pad_id: Padding token id.
        bos_id: Start token id.
        eos_id: End token id.
        unk_id: Unknown-word id (never copied); -1: none.
    """

    vocab_size: int = 2000
    encoder: str = "cnn_small"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    embed_dim: int = 128
    hidden_dim: int = 256
    attention_dim: int = 128
    dropout: float = 0.2
    neighbours: int = 5
    memory_size: int = 0
    memory_len: int = 16
    exclude_group: float = 0.5
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3


class MaskedAttention(nn.Module):
    """Additive attention of a query over a padded set: masked entries get no weight."""

    def __init__(self, feat_dim: int, query_dim: int, attention_dim: int):
        super().__init__()
        self.feat_proj = nn.Linear(feat_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, feats: Tensor, feats_proj: Tensor, mask: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        e = self.score(torch.tanh(feats_proj + self.query_proj(query).unsqueeze(1))).squeeze(-1)   # (B, S)
        alpha = e.masked_fill(~mask, float("-inf")).softmax(dim=-1).nan_to_num(0.0)              # (B, S)
        return torch.bmm(alpha.unsqueeze(1), feats).squeeze(1), alpha                             # (B, F), (B, S)


class CaptionRAG(nn.Module):
    """Image encoder + caption memory + attention LSTM with a copy gate.

    Args:
        image_encoder: Module mapping ``(B, 3, H, W)`` images to :class:`ImageFeatures`, with ``out_dim``.
        cfg: Sizes, memory shape and special token ids.
    """

    def __init__(self, image_encoder: nn.Module, cfg: CaptionRAGConfig):
        super().__init__()
        d, e, h = image_encoder.out_dim, cfg.embed_dim, cfg.hidden_dim
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.pad_id, self.bos_id, self.eos_id = cfg.pad_id, cfg.bos_id, cfg.eos_id
        self.vocab_size = cfg.vocab_size
        self.register_buffer("memory_keys", torch.zeros(cfg.memory_size, d))                       # (M, D)
        self.register_buffer("memory_tokens", torch.full((cfg.memory_size, cfg.memory_len), cfg.pad_id))  # (M, L)
        self.register_buffer("memory_groups", torch.zeros(cfg.memory_size, dtype=torch.long))    # (M,)
        self.embed = nn.Embedding(cfg.vocab_size, e, padding_idx=cfg.pad_id)
        self.rank_embed = nn.Embedding(max(cfg.neighbours, 1), e)
        self.pos_embed = nn.Embedding(cfg.memory_len, e)
        self.sim_proj = nn.Linear(1, e)
        self.image_attention = SoftAttention(d, h, cfg.attention_dim)
        self.text_attention = MaskedAttention(e, h, cfg.attention_dim)
        self.init_h = nn.Linear(d + e, h)
        self.init_c = nn.Linear(d + e, h)
        self.f_beta = nn.Linear(h, 1)
        self.lstm = nn.LSTMCell(e + d + e, h)
        self.out_h = nn.Linear(h, e)
        self.out_z = nn.Linear(d, e)
        self.out_c = nn.Linear(e, e)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(e, cfg.vocab_size)
        self.gate = nn.Linear(h + d + e + e, 1)

    @torch.no_grad()
    def set_memory(self, keys: Tensor, tokens: Tensor, groups: Tensor) -> None:
        """Fill the memory: pooled features ``(M, D)`` (normalised here), caption tokens ``(M, L)`` without
        BOS, padded with ``pad_id``, group ids ``(M,)``."""
        if keys.shape != self.memory_keys.shape or tokens.shape != self.memory_tokens.shape:
            raise ValueError(f"memory of {tuple(keys.shape)} keys / {tuple(tokens.shape)} tokens; the model was "
                             f"built for {tuple(self.memory_keys.shape)} / {tuple(self.memory_tokens.shape)}")
        self.memory_keys.copy_(F.normalize(keys.float(), dim=-1))
        self.memory_tokens.copy_(tokens)
        self.memory_groups.copy_(groups)

    def lookup(self, pooled: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest memory entries of each image: similarities ``(B, k)`` and rows ``(B, k)``.

        Args:
            pooled: Pooled image features (B, D).
            rows: In training, each image's own memory row (B,): it, and with probability ``exclude_group``
                its group, are left out.
        """
        sims = F.normalize(pooled.float(), dim=-1) @ self.memory_keys.T                             # (B, M)
        if rows is not None:
            own = self.memory_groups[rows].unsqueeze(1) == self.memory_groups.unsqueeze(0)          # (B, M)
            drop = torch.rand(len(rows), 1, device=sims.device) < self.cfg.exclude_group           # (B, 1)
            excluded = own & drop
            excluded[torch.arange(len(rows), device=rows.device), rows] = True
            sims = sims.masked_fill(excluded, float("-inf"))
        k = min(self.cfg.neighbours, self.memory_keys.shape[0])
        return sims.topk(k, dim=1)

    @torch.no_grad()
    def neighbour_captions(self, feats: ImageFeatures) -> list[list[list[int]]]:
        """The token ids (no EOS, no padding) of each image's ``k`` nearest memory captions, nearest first."""
        _, idx = self.lookup(feats.pooled)                                                           # (B, k)
        return memory_captions(self.memory_tokens[idx].tolist(), self.pad_id, self.eos_id)

    def encode(self, images: Tensor) -> ImageFeatures:
        return self.image_encoder(images)

    def init_state(self, feats: ImageFeatures, rows: Tensor | None = None) -> DecoderState:
        grid = feats.grid                                                                            # (B, N, D)
        sims, idx = self.lookup(feats.pooled, rows)                                                  # (B, k)
        b, k = idx.shape
        length = self.memory_tokens.shape[1]
        tokens = self.memory_tokens[idx]                                                             # (B, k, L)
        ranks = torch.arange(k, device=grid.device).view(1, k, 1)
        pos = torch.arange(length, device=grid.device).view(1, 1, length)
        nb = (self.embed(tokens) + self.rank_embed(ranks) + self.pos_embed(pos)
              + self.sim_proj(sims.clamp_min(-1.0).to(grid.dtype).view(b, k, 1, 1)))                # (B, k, L, E)
        nb, tokens = nb.reshape(b, k * length, nb.shape[-1]), tokens.reshape(b, k * length)          # (B, S, E), (B, S)
        mask = tokens != self.pad_id                                                                 # (B, S)
        if self.cfg.unk_id >= 0:
            mask &= tokens != self.cfg.unk_id
        nb_mean = (nb * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)          # (B, E)
        start = torch.cat([grid.mean(dim=1), nb_mean], dim=-1)                                       # (B, D+E)
        h, c = torch.tanh(self.init_h(start)), torch.tanh(self.init_c(start))                        # (B, H)
        return DecoderState({"h": h, "c": c}, {
            "grid": grid, "grid_proj": self.image_attention.project(grid), "nb": nb,
            "nb_proj": self.text_attention.feat_proj(nb), "nb_tokens": tokens, "nb_mask": mask})

    def step(self, prev: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, DecoderState]:
        """One decoding step: log-probabilities (B, V) of the mixed distribution, image attention (B, N), state."""
        s = state.static
        h, c = state.dynamic["h"], state.dynamic["c"]
        emb = self.embed(prev)                                                                       # (B, E)
        context, alpha = self.image_attention(s["grid"], s["grid_proj"], h)                          # (B, D), (B, N)
        z = torch.sigmoid(self.f_beta(h)) * context
        text, beta = self.text_attention(s["nb"], s["nb_proj"], s["nb_mask"], h)                     # (B, E), (B, S)
        h, c = self.lstm(torch.cat([emb, z, text], dim=-1), (h, c))
        logits = self.out(self.dropout(emb + self.out_h(h) + self.out_z(z) + self.out_c(text)))     # (B, V)
        g = torch.sigmoid(self.gate(torch.cat([h, z, text, emb], dim=-1)))                           # (B, 1)
        copy = torch.zeros_like(logits, dtype=torch.float32).scatter_add_(1, s["nb_tokens"], beta.float())  # (B, V)
        probs = g.float() * logits.float().softmax(dim=-1) + (1 - g.float()) * copy
        return probs.clamp_min(1e-12).log(), alpha, DecoderState({"h": h, "c": c}, s)

    def forward(self, images: Tensor, tokens: Tensor, rows: Tensor | None = None) -> CaptionOutput:
        """Teacher forcing: log-probabilities of ``tokens[:, 1:]`` (B, T-1, V) and attention (B, T-1, N).

        Args:
            images: (B, 3, H, W).
            tokens: (B, T) starting with BOS, padded with ``pad_id``.
            rows: The images' own memory rows (B,) in training (see :meth:`lookup`).
        """
        state = self.init_state(self.encode(images), rows)
        return CaptionOutput(*teacher_force(self, state, tokens))


def memory_captions(rows: list[list[list[int]]], pad_id: int, eos_id: int) -> list[list[list[int]]]:
    """Memory caption token ids ``(B, k, L)`` as lists without padding, each cut before its EOS."""
    out = []
    for row in rows:
        caps = []
        for toks in row:
            toks = [t for t in toks if t != pad_id]
            caps.append(toks[:toks.index(eos_id)] if eos_id in toks else toks)
        out.append(caps)
    return out


@register_family("caption_rag", CaptionRAGConfig)
def build_caption_rag(cfg: CaptionRAGConfig) -> CaptionRAG:
    """The image encoder ``cfg.encoder`` from the registry, then the memory and the decoder."""
    return CaptionRAG(create_model(cfg.encoder, **cfg.encoder_kwargs), cfg)


register_model("caption_rag", "caption_rag", "Retrieval-augmented Show-Attend-Tell: reads and copies the captions "
               "of the 5 nearest training images (small CNN encoder, frozen in training).")
register_model("caption_rag_tiny", "caption_rag", "A few-thousand-parameter variant for tests.", vocab_size=50,
               encoder="cnn_tiny", embed_dim=16, hidden_dim=24, attention_dim=16, dropout=0.0, neighbours=3,
               memory_len=8)
