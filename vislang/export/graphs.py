"""The graphs each model exports: a small wrapper module per network call the predictors make, its example
inputs, its output names and which input axes are dynamic.

| model                          | graphs                                                            |
|--------------------------------|-------------------------------------------------------------------|
| image encoder (cnn, vit, ...)  | ``image``: images -> grid, pooled                                 |
| text encoder                   | ``text``: input_ids, attention_mask -> tokens, pooled             |
| dual encoder                   | ``image``: images -> embedding; ``text``: ids, mask -> embedding  |
| fusion model (VQA, classify)   | ``fusion``: images, ids, mask, image_index -> logits (+ maps)     |
| region tagger                  | ``tagger``: images -> logits of each attribute                    |
| captioners                     | ``encoder``: images -> decoder state; ``step``: one decoding step |
| text-to-image diffusion        | ``text``: ids, mask -> token states; ``unet``: one denoising step |

Beam search, sampling and the diffusion samplers stay in Python (:mod:`vislang.decoding`, the model's
``sample``) and drive the step graphs. Batch and sequence axes are dynamic; image sides are fixed (the
preprocessing makes every image the model's size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vislang.decoding import DecoderState
from vislang.errors import VislangError
from vislang.models.caption_lstm import CaptionLSTM
from vislang.models.caption_rag import CaptionRAG
from vislang.models.caption_transformer import CaptionTransformer
from vislang.models.diffusion_unet import TextContext, TextToImageDiffusion
from vislang.models.dual_encoder import DualEncoder
from vislang.models.dual_encoder_ensemble import DualEncoderEnsemble
from vislang.models.fusion_model import FusionModel
from vislang.models.region_tagger import RegionTagger

BATCH, SEQ, IMAGES, PREFIX = "batch", "seq", "images", "prefix"
"""Names of the dynamic axes: texts / images per batch, tokens per text, images of a fusion batch (several
texts may share one image), tokens decoded so far (the Transformer captioner's step)."""


@dataclass
class GraphSpec:
    """One graph to export.

    Attributes:
        name: Its name (``image``, ``text``, ``fusion``, ``tagger``, ``encoder``, ``step``, ``unet``).
        module: The wrapper whose ``forward(*inputs)`` returns a tuple of tensors.
        inputs: Example inputs by name, in ``forward``'s order.
        outputs: Output names, in order.
        dynamic: Input name -> ``{axis: axis name}`` of its dynamic axes.
        what: The model part it runs, named in errors (``"image_encoder (CNNEncoder)"``).
        sample: ``sample(batch, seq)`` -> inputs of that batch size and sequence length (the parity checks
            run the graph at shapes other than the example's).
    """

    name: str
    module: nn.Module
    inputs: dict[str, Tensor]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]
    what: str
    sample: Callable[[int, int], dict[str, Tensor]]


@dataclass
class ModelGraphs:
    """Every graph of a model, and what the runtime needs beside them (grid size, state names, token ids)."""

    graphs: list[GraphSpec]
    info: dict[str, Any] = field(default_factory=dict)


def _name(model: nn.Module, attr: str | None = None) -> str:
    part = getattr(model, attr) if attr else model
    return f"{attr} ({type(part).__name__})" if attr else type(part).__name__


EXAMPLE_BATCH, EXAMPLE_SEQ = 3, 7
"""The shapes graphs are exported at."""


def _images(image_size: int, batch: int = EXAMPLE_BATCH) -> Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randn(batch, 3, image_size, image_size, generator=g)                 # (B, 3, S, S)


def _texts(vocab_size: int, batch: int = EXAMPLE_BATCH, length: int = EXAMPLE_SEQ,
           pad_id: int = 0) -> dict[str, Tensor]:
    """Example ``input_ids`` (B, L) and ``attention_mask`` (B, L): text ``i`` has ``L - i % 3`` tokens (at
    least 1), the rest padding."""
    g = torch.Generator().manual_seed(100 + 7 * batch + length)
    ids = torch.randint(4, max(vocab_size, 5), (batch, length), generator=g)
    real = (length - torch.arange(batch) % 3).clamp(min=1)                             # (B,)
    mask = (torch.arange(length)[None] < real[:, None]).long()                         # (B, L)
    return {"input_ids": ids.masked_fill(mask == 0, pad_id), "attention_mask": mask}


# ------------------------------------------------------------------------------------------ wrappers


class ImageEncoderGraph(nn.Module):
    """images (B, 3, S, S) -> grid (B, N, D), pooled (B, D)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(images)
        return out.grid, out.pooled


class TextEncoderGraph(nn.Module):
    """input_ids, attention_mask (B, L) -> tokens (B, L, D), pooled (B, D)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(input_ids, attention_mask)
        return out.tokens, out.pooled


class DualImageGraph(nn.Module):
    """images (B, 3, S, S) -> L2-normalised embedding (B, E)."""

    def __init__(self, model: DualEncoder | DualEncoderEnsemble):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return (self.model.encode_image(images),)


class DualTextGraph(nn.Module):
    """input_ids, attention_mask (B, L) -> L2-normalised embedding (B, E) (no text cache: the tower runs)."""

    def __init__(self, model: DualEncoder | DualEncoderEnsemble):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor]:
        return (self.model.encode_text(input_ids, attention_mask, cached=False),)


class FusionGraph(nn.Module):
    """images (I, 3, S, S), input_ids, attention_mask (B, L), image_index (B,) -> logits (B, C) and, when the
    fusion has them, attention (B, N) and modality weights (B, M)."""

    def __init__(self, model: FusionModel, extras: tuple[str, ...]):
        super().__init__()
        self.model, self.extras = model, extras

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                image_index: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images, input_ids, attention_mask, image_index)
        return (out.logits, *(getattr(out, e) for e in self.extras))


class TaggerGraph(nn.Module):
    """images (B, 3, S, S) -> logits (B, N, C_a) of each attribute, in ``attributes`` order."""

    def __init__(self, model: RegionTagger, attributes: list[str]):
        super().__init__()
        self.model, self.attributes = model, attributes

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images).logits
        return tuple(out[a] for a in self.attributes)


class CaptionEncoderGraph(nn.Module):
    """images (B, 3, S, S) -> the decoder's initial state tensors ``names`` (the empty ones left out)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        state = self.model.init_state(self.model.encode(images))
        both = {**state.dynamic, **state.static}
        return tuple(both[k] for k in self.names)


class CaptionStepGraph(nn.Module):
    """prev (B,), the dynamic and static state tensors -> logits (B, V), attention (B, N), next dynamic state."""

    def __init__(self, model: nn.Module, dynamic: list[str], static: list[str]):
        super().__init__()
        self.model, self.dynamic, self.static = model, dynamic, static

    def forward(self, prev: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        nd = len(self.dynamic)
        s = DecoderState(dict(zip(self.dynamic, state[:nd])), dict(zip(self.static, state[nd:])))
        logits, alpha, s = self.model.step(prev, s)
        return (logits, alpha, *(s.dynamic[k] for k in self.dynamic))


class DiffusionTextGraph(nn.Module):
    """input_ids, attention_mask (B, L) -> the text tower's token states (B, L, D)."""

    def __init__(self, model: TextToImageDiffusion):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor]:
        return (self.model.text_encoder(input_ids, attention_mask).tokens,)


class UNetStepGraph(nn.Module):
    """noisy (B, 3, S, S), timesteps (B,), states (B, L, D), mask (B, L) -> predicted noise (B, 3, S, S) of the
    EMA UNet."""

    def __init__(self, model: TextToImageDiffusion):
        super().__init__()
        self.model = model

    def forward(self, noisy: Tensor, timesteps: Tensor, states: Tensor, mask: Tensor) -> tuple[Tensor]:
        return (self.model(noisy, timesteps, TextContext(states, mask), ema=True),)


# ------------------------------------------------------------------------------------------ per model


def _spec(name: str, module: nn.Module, sample: Callable[[int, int], dict[str, Tensor]], outputs: list[str],
          dynamic: dict[str, dict[int, str]], what: str) -> GraphSpec:
    return GraphSpec(name, module, sample(EXAMPLE_BATCH, EXAMPLE_SEQ), outputs, dynamic, what, sample)


TEXT_AXES = {"input_ids": {0: BATCH, 1: SEQ}, "attention_mask": {0: BATCH, 1: SEQ}}


def model_graphs(model: nn.Module, image_size: int = 32, vocab_size: int | None = None) -> ModelGraphs:
    """The graphs of ``model`` (put in eval mode) with example inputs: images of ``image_size`` pixels (the
    model folder's preprocessing size), texts of ids below ``vocab_size`` (default: the text tower's).

    Raises:
        VislangError: A kind of model vislang does not know how to export.
    """
    model.eval()
    if isinstance(model, (CaptionLSTM, CaptionTransformer, CaptionRAG)):
        return _captioner(model, image_size)
    if isinstance(model, FusionModel):
        return _fusion(model, image_size, vocab_size or _vocab(model.text_encoder))
    if isinstance(model, TextToImageDiffusion):
        return _diffusion(model, vocab_size or _vocab(model.text_encoder))
    images = lambda b, _: {"images": _images(image_size, b)}  # noqa: E731
    if isinstance(model, (DualEncoder, DualEncoderEnsemble)):
        first = model.members[0] if isinstance(model, DualEncoderEnsemble) else model
        vocab = vocab_size or _vocab(first.text_encoder)
        return ModelGraphs([
            _spec("image", DualImageGraph(model), images, ["embeds"], {"images": {0: BATCH}},
                  _name(first, "image_encoder")),
            _spec("text", DualTextGraph(model), lambda b, n: _texts(vocab, b, n), ["embeds"], TEXT_AXES,
                  _name(first, "text_encoder"))], {"embed_dim": int(model.embed_dim)})
    if isinstance(model, RegionTagger):
        attributes = list(model.heads)
        return ModelGraphs([_spec("tagger", TaggerGraph(model, attributes), images,
                                  [f"logits_{a}" for a in attributes], {"images": {0: BATCH}},
                                  _name(model, "image_encoder"))],
                           {"attributes": attributes, "grid_hw": _grid_hw(model.image_encoder, image_size)})
    if hasattr(model, "out_dim") and _is_text_encoder(model):
        vocab = vocab_size or _vocab(model)
        return ModelGraphs([_spec("text", TextEncoderGraph(model), lambda b, n: _texts(vocab, b, n),
                                  ["tokens", "pooled"], TEXT_AXES, _name(model))])
    if hasattr(model, "out_dim"):
        return ModelGraphs([_spec("image", ImageEncoderGraph(model), images, ["grid", "pooled"],
                                  {"images": {0: BATCH}}, _name(model))],
                           {"grid_hw": _grid_hw(model, image_size)})
    raise VislangError(f"{type(model).__name__}: vislang does not know which graphs to export for this model")


def _is_text_encoder(model: nn.Module) -> bool:
    import inspect

    return "attention_mask" in inspect.signature(model.forward).parameters


def _vocab(text_encoder: nn.Module) -> int:
    cfg = getattr(text_encoder, "cfg", None)
    if cfg is not None and hasattr(cfg, "vocab_size"):
        return int(cfg.vocab_size)
    inner = getattr(text_encoder, "model", None)                                # a Hugging Face tower
    return int(getattr(getattr(inner, "config", None), "vocab_size", 32))


def _grid_hw(encoder: nn.Module, image_size: int) -> list[int]:
    with torch.no_grad():
        return list(encoder(_images(image_size, 1)).grid_hw)


def _captioner(model: nn.Module, image_size: int) -> ModelGraphs:
    with torch.no_grad():
        feats = model.encode(_images(image_size))
        state = model.init_state(feats)
    # state tensors with no elements (the Transformer's empty prefix) are made by the runtime, not the encoder
    empty = sorted(k for k, v in state.dynamic.items() if v.numel() == 0)
    dynamic, static = sorted(state.dynamic), sorted(state.static)
    transformer = isinstance(model, CaptionTransformer)

    def step_inputs(b: int, n: int) -> dict[str, Tensor]:
        with torch.no_grad():
            s = model.init_state(model.encode(_images(image_size, b)))
        g = torch.Generator().manual_seed(b + n)
        dyn = dict(s.dynamic)
        if transformer:                      # a prefix of n - 4 tokens (example: 3), BOS first
            prefix = torch.randint(4, model.vocab_size, (b, max(n - 4, 0)), generator=g)
            dyn["tokens"] = torch.cat([torch.full((b, 1), model.bos_id), prefix], 1)[:, :max(n - 4, 0)]
        return {"prev": torch.randint(4, model.vocab_size, (b,), generator=g),
                **{f"in_{k}": dyn[k] for k in dynamic}, **{f"in_{k}": s.static[k] for k in static}}

    step_dyn: dict[str, dict[int, str]] = {k: {0: BATCH} for k in ["prev", *(f"in_{k}" for k in dynamic + static)]}
    if transformer:
        step_dyn["in_tokens"] = {0: BATCH, 1: PREFIX}
    info = {"grid_hw": list(feats.grid_hw), "dynamic": dynamic, "static": static, "empty": empty,
            "pad_id": model.pad_id, "bos_id": model.bos_id, "eos_id": model.eos_id}
    if isinstance(model, CaptionRAG):
        info["memory_len"] = int(model.memory_tokens.shape[1])
    encoded = [k for k in dynamic if k not in empty] + static
    return ModelGraphs([
        _spec("encoder", CaptionEncoderGraph(model, encoded), lambda b, _: {"images": _images(image_size, b)},
              encoded, {"images": {0: BATCH}}, _name(model, "image_encoder")),
        _spec("step", CaptionStepGraph(model, dynamic, static), step_inputs,
              ["logits", "attention", *(f"out_{k}" for k in dynamic)], step_dyn, f"{type(model).__name__}.step"),
    ], info)


def _fusion(model: FusionModel, image_size: int, vocab: int) -> ModelGraphs:
    def inputs(b: int, n: int) -> dict[str, Tensor]:
        """``b`` texts about ``b - 1`` images (the last two texts share one)."""
        i = max(b - 1, 1)
        return {"images": _images(image_size, i), **_texts(vocab, b, n),
                "image_index": torch.arange(b).clamp(max=i - 1)}

    example = inputs(EXAMPLE_BATCH + 1, EXAMPLE_SEQ)
    with torch.no_grad():
        out = model(*example.values())
    extras = tuple(e for e in ("attention", "modality_weights") if getattr(out, e) is not None)
    dyn = {"images": {0: IMAGES}, **TEXT_AXES, "image_index": {0: BATCH}}
    spec = GraphSpec("fusion", FusionGraph(model, extras), example, ["logits", *extras], dyn,
                     f"{type(model).__name__} ({type(model.fusion).__name__} fusion)", inputs)
    return ModelGraphs([spec], {"grid_hw": list(out.grid_hw), "extras": list(extras),
                                "modalities": list(model.modalities)})


def _diffusion(model: TextToImageDiffusion, vocab: int) -> ModelGraphs:
    s = model.image_size

    def unet_inputs(b: int, n: int) -> dict[str, Tensor]:
        text = _texts(vocab, b, n)
        with torch.no_grad():
            states = model.text_encoder(*text.values()).tokens                        # (B, L, D)
        steps = torch.linspace(1, model.cfg.train_timesteps - 1, b).long()            # (B,)
        return {"noisy": _images(s, b), "timesteps": steps, "states": states, "mask": text["attention_mask"]}

    return ModelGraphs([
        _spec("text", DiffusionTextGraph(model), lambda b, n: _texts(vocab, b, n), ["states"], TEXT_AXES,
              _name(model, "text_encoder")),
        _spec("unet", UNetStepGraph(model), unet_inputs, ["noise"],
              {"noisy": {0: BATCH}, "timesteps": {0: BATCH}, "states": {0: BATCH, 1: SEQ}, "mask": {0: BATCH, 1: SEQ}},
              _name(model, "ema_unet")),
    ], {"image_size": s, "locked": bool(model.locked)})
