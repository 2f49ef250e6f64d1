"""Caption decoding: greedy, batched beam search, and top-k / nucleus sampling.

Works with any decoder exposing ``encode(images) -> ImageFeatures``, ``init_state(features) ->
DecoderState`` and ``step(prev_tokens, state) -> (logits, attention, state)`` plus ``bos_id`` /
``eos_id`` / ``pad_id``. Every decoder returns the per-token attention weights over the image grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class Decoded:
    """Decoded captions for a batch.

    Attributes:
        tokens: Token ids per image, without BOS and EOS.
        scores: Sum of token log-probabilities (EOS included) per image.
        attention: Per image, the attention weights of each emitted token ``(L, N)`` (EOS step included,
            so ``L = len(tokens) + 1`` unless the caption hit ``max_len``), or None when the decoder has none.
        grid_hw: ``(h, w)`` of the attention grid.
    """

    tokens: list[list[int]]
    scores: list[float]
    attention: list[Tensor] | None
    grid_hw: tuple[int, int]


@dataclass
class DecoderState:
    """What a decoder carries between steps: ``dynamic`` tensors change every step and are reordered by
    beam search; ``static`` tensors (the image grid) are fixed per image. All are batch-first."""

    dynamic: dict[str, Tensor]
    static: dict[str, Tensor]

    def map(self, fn: Callable[[Tensor], Tensor]) -> DecoderState:
        return DecoderState({k: fn(v) for k, v in self.dynamic.items()}, {k: fn(v) for k, v in self.static.items()})


def teacher_force(model: nn.Module, state: DecoderState, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``model.step`` over ``tokens[:, :-1]`` (B, T), each step fed the true previous token: logits
    (B, T-1, V) for ``tokens[:, 1:]`` and the attention of each step (B, T-1, N)."""
    logits, alphas = [], []
    for t in range(tokens.shape[1] - 1):
        step_logits, alpha, state = model.step(tokens[:, t], state)
        logits.append(step_logits)
        alphas.append(alpha)
    return torch.stack(logits, 1), torch.stack(alphas, 1)


def _trim(seq: list[int], eos: int) -> list[int]:
    return seq[: seq.index(eos)] if eos in seq else seq


@torch.no_grad()
def sample_or_greedy(model: nn.Module, images: Tensor, max_len: int = 20, *, greedy: bool = True,
                     temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                     generator: torch.Generator | None = None, min_len: int = 0) -> Decoded:
    """Greedy decoding, or sampling with temperature, top-k and nucleus (top-p) filtering.

    Args:
        model: The captioner.
        images: (B, 3, H, W).
        max_len: Most tokens generated per caption (EOS included).
        greedy: Take the argmax (the sampling options are ignored).
        temperature: Divides the logits before sampling.
        top_k: Sample among the k most likely tokens (0: all).
        top_p: Sample among the smallest set of tokens with this total probability (1: all).
        generator: RNG for sampling.
        min_len: EOS is not allowed before this many tokens.
    """
    feats = model.encode(images)
    state = model.init_state(feats)
    b = images.shape[0]
    prev = torch.full((b,), model.bos_id, dtype=torch.long, device=images.device)
    done = torch.zeros(b, dtype=torch.bool, device=images.device)
    scores = torch.zeros(b, device=images.device)
    out_tokens, out_attn = [], []
    for t in range(max_len):
        logits, alpha, state = model.step(prev, state)
        logits = _forbid(logits.float(), model, t < min_len)
        logp = logits.log_softmax(-1)  # (B, V)
        if greedy:
            nxt = logp.argmax(-1)
        else:
            nxt = _sample(logits / max(temperature, 1e-6), top_k, top_p, generator)
        step_logp = logp.gather(1, nxt[:, None]).squeeze(1)
        scores += torch.where(done, torch.zeros_like(step_logp), step_logp)
        nxt = torch.where(done, torch.full_like(nxt, model.eos_id), nxt)
        out_tokens.append(nxt)
        out_attn.append(alpha)
        done |= nxt == model.eos_id
        prev = nxt
        if bool(done.all()):
            break
    toks = torch.stack(out_tokens, 1).tolist()  # (B, L)
    attn = torch.stack(out_attn, 1) if out_attn[0] is not None else None  # (B, L, N)
    tokens = [_trim(t, model.eos_id) for t in toks]
    attention = None
    if attn is not None:
        attention = [attn[i, : min(len(t) + 1, attn.shape[1])].cpu() for i, t in enumerate(tokens)]
    return Decoded(tokens, scores.tolist(), attention, tuple(feats.grid_hw))


def _forbid(logits: Tensor, model: nn.Module, no_eos: bool) -> Tensor:
    """Padding and BOS are never generated; EOS not before the minimum length."""
    logits[:, model.pad_id] = float("-inf")
    logits[:, model.bos_id] = float("-inf")
    if no_eos:
        logits[:, model.eos_id] = float("-inf")
    return logits


def _sample(logits: Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> Tensor:
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop tokens once the mass before them already reaches top_p (the top token always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def greedy(model: nn.Module, images: Tensor, max_len: int = 20, min_len: int = 0) -> Decoded:
    """Greedy decoding (argmax at each step)."""
    return sample_or_greedy(model, images, max_len, greedy=True, min_len=min_len)


def sample(model: nn.Module, images: Tensor, max_len: int = 20, *, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, generator: torch.Generator | None = None) -> Decoded:
    """Sampling with temperature and top-k / nucleus filtering."""
    return sample_or_greedy(model, images, max_len, greedy=False, temperature=temperature, top_k=top_k,
                            top_p=top_p, generator=generator)


@torch.no_grad()
def beam_search(model: nn.Module, images: Tensor, beam_size: int = 3, max_len: int = 20,
                length_penalty: float = 0.0, min_len: int = 0) -> Decoded:
    """Batched beam search.

    Each image keeps ``beam_size`` hypotheses ranked by summed log-probability; a hypothesis that emits EOS
    is frozen (it keeps its score and slot). At the end the best hypothesis per image is chosen by
    ``score / length ** length_penalty`` (length counts EOS; 0 = plain sum, 1 = mean log-probability).
    With ``beam_size=1`` this is exactly greedy decoding.

    Args:
        model: The captioner.
        images: (B, 3, H, W).
        beam_size: Hypotheses per image.
        max_len: Most tokens per caption (EOS included).
        length_penalty: Exponent of the length normalisation of the final choice.
        min_len: EOS is not allowed before this many tokens.
    """
    feats = model.encode(images)
    b, k, dev = images.shape[0], beam_size, images.device
    state = model.init_state(feats).map(lambda t: t.repeat_interleave(k, dim=0))  # (B*K, ...)
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand at step 0
    prev = torch.full((b * k,), model.bos_id, dtype=torch.long, device=dev)
    done = torch.zeros(b * k, dtype=torch.bool, device=dev)
    lengths = torch.zeros(b * k, dtype=torch.long, device=dev)
    history = torch.empty(b * k, 0, dtype=torch.long, device=dev)  # (B*K, t)
    attn_hist: Tensor | None = None  # (B*K, t, N)
    base = (torch.arange(b, device=dev) * k).repeat_interleave(k)  # first row of each image, (B*K,)
    for t in range(max_len):
        logits, alpha, state = model.step(prev, state)
        logp = _forbid(logits.float(), model, t < min_len).log_softmax(-1)  # (B*K, V)
        v = logp.shape[-1]
        # a finished beam can only "emit" EOS again, at no cost
        frozen = torch.full_like(logp, float("-inf"))
        frozen[:, model.eos_id] = 0.0
        logp = torch.where(done[:, None], frozen, logp)
        cand = (scores.view(-1, 1) + logp).view(b, k * v)  # (B, K*V)
        top_scores, top_idx = cand.topk(k, dim=-1)  # (B, K)
        src = base + (top_idx // v).view(-1)  # source row of each new beam, (B*K,)
        tok = (top_idx % v).view(-1)
        state = DecoderState({n: t.index_select(0, src) for n, t in state.dynamic.items()}, state.static)
        was_done = done.index_select(0, src)
        lengths = lengths.index_select(0, src) + (~was_done).long()
        done = was_done | (tok == model.eos_id)
        history = torch.cat([history.index_select(0, src), tok[:, None]], dim=1)
        if alpha is not None:
            a = alpha.index_select(0, src)[:, None]
            attn_hist = a if attn_hist is None else torch.cat([attn_hist.index_select(0, src), a], dim=1)
        scores = top_scores
        prev = tok
        if bool(done.all()):
            break
    final = scores.view(-1) / lengths.clamp(min=1).float() ** length_penalty if length_penalty else scores.view(-1)
    best = final.view(b, k).argmax(-1) + torch.arange(b, device=dev) * k  # (B,)
    tokens = [_trim(history[i].tolist(), model.eos_id) for i in best.tolist()]
    attention = None
    if attn_hist is not None:
        attention = [attn_hist[i, : min(len(t) + 1, attn_hist.shape[1])].cpu() for i, t in zip(best.tolist(), tokens)]
    return Decoded(tokens, scores.view(-1)[best].tolist(), attention, tuple(feats.grid_hw))
