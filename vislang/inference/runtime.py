"""Running exported graphs: ONNX Runtime sessions or ``torch.export`` programs behind the methods the
predictors call on an eager model, so ``vislang.load(folder, runtime="onnx")`` returns the same predictor
(same preprocessing, same Python beam search and samplers) with only the network calls swapped.

```python
p = vislang.load("exported/cap", runtime="onnx")         # a CaptionPredictor on ONNX Runtime
p.caption(["cat.png"], beam=3)
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vislang.decoding import DecoderState
from vislang.errors import VislangError
from vislang.models.caption_rag import memory_captions
from vislang.models.diffusion_unet import TextContext, TextToImageDiffusion
from vislang.models.fusion_model import FusionModelOutput
from vislang.models.region_tagger import RegionTaggerOutput
from vislang.models.registry import model_config

FORMATS = ("onnx", "torch-export")
"""Export formats: ONNX graphs (``*.onnx``) and ``torch.export`` programs (``*.pt2``)."""

RUNTIMES = ("torch", "onnx", "torch-export")
"""What ``vislang.load`` runs a model with: the eager model, ONNX Runtime, or the exported programs."""

MANIFEST = "export.json"
"""The exported folder's manifest (format, graphs and their inputs / outputs / dynamic axes, tolerances)."""

Graph = Callable[..., list[Tensor]]


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``export.json`` of an exported folder.

    Raises:
        VislangError: None there (not an exported folder), or it does not parse.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise VislangError(f"{folder}: not an exported model folder (no {MANIFEST}); make one with "
                           "`vislang export RUN --format onnx -o OUT`")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise VislangError(f"{path}: not valid JSON ({e})") from None


def open_graph(folder: str | os.PathLike, entry: dict[str, Any], fmt: str, threads: int | None = None) -> Graph:
    """A callable running one exported graph: tensors in (in the manifest's input order), tensors out.

    Args:
        folder: The exported folder.
        entry: The graph's manifest entry (``file``, ``inputs``, ``dtypes``).
        fmt: ``onnx`` (ONNX Runtime, CPU) or ``torch-export`` (``torch.export.load``).
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        VislangError: ONNX Runtime is not installed (with the install hint), or the file does not load.
    """
    path = Path(folder) / entry["file"]
    if fmt == "torch-export":
        try:
            program = torch.export.load(str(path)).module()
        except Exception as e:
            raise VislangError(f"{path}: cannot load the exported program: {e}") from None

        def run_program(*args: Tensor) -> list[Tensor]:
            with torch.no_grad():
                out = program(*args)
            return list(out) if isinstance(out, (tuple, list)) else [out]

        return run_program
    if fmt != "onnx":
        raise VislangError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise VislangError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None
    names = [i.name for i in session.get_inputs()]
    dtypes = entry.get("dtypes", {})

    def run_session(*args: Tensor) -> list[Tensor]:
        feed = {n: a.detach().cpu().to(getattr(torch, dtypes.get(n, str(a.dtype).removeprefix("torch.")))).numpy()
                for n, a in zip(names, args)}
        return [torch.from_numpy(o) for o in session.run(None, feed)]

    return run_session


def onnxruntime() -> Any:
    """The ``onnxruntime`` module.

    Raises:
        VislangError: Not installed (with the install hint).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise VislangError("the onnx runtime needs ONNX Runtime: pip install 'vislang[onnx]' (onnx, onnxruntime, "
                           "onnxscript)") from None
    return ort


# ------------------------------------------------------------------------------ the models' stand-ins


class ExportedModel(nn.Module):
    """A model whose network calls run exported graphs (no parameters: it is on the CPU, like the graphs).

    Args:
        graphs: Graph name -> callable (:func:`open_graph`).
        manifest: The exported folder's ``export.json``.
        config: The model folder's ``config.json``.
    """

    def __init__(self, graphs: dict[str, Graph], manifest: dict[str, Any], config: dict[str, Any]):
        super().__init__()
        self.graphs, self.manifest, self.config = graphs, manifest, config
        self.info: dict[str, Any] = manifest.get("info", {})

    def run(self, graph: str, *args: Tensor) -> list[Tensor]:
        return self.graphs[graph](*args)


class EncodedImages(NamedTuple):
    """What an exported captioner's ``encode`` returns: its encoder graph's state tensors."""

    tensors: dict[str, Tensor]      # state name -> (B, ...)
    grid_hw: tuple[int, int]        # (h, w) of the attention grid


class ExportedCaptioner(ExportedModel):
    """A captioner: ``encode`` / ``init_state`` / ``step`` as :mod:`vislang.decoding` drives them."""

    def __init__(self, graphs: dict[str, Graph], manifest: dict[str, Any], config: dict[str, Any]):
        super().__init__(graphs, manifest, config)
        self.pad_id, self.bos_id, self.eos_id = (int(self.info[k]) for k in ("pad_id", "bos_id", "eos_id"))
        self.dynamic, self.static = list(self.info["dynamic"]), list(self.info["static"])
        self.empty = list(self.info.get("empty", []))

    def encode(self, images: Tensor) -> EncodedImages:
        names = self.manifest["graphs"]["encoder"]["outputs"]
        out = dict(zip(names, self.run("encoder", images)))
        for k in self.empty:                                                    # (B, 0) token prefix
            out[k] = torch.empty(images.shape[0], 0, dtype=torch.long)
        return EncodedImages(out, tuple(self.info["grid_hw"]))

    def init_state(self, feats: EncodedImages) -> DecoderState:
        return DecoderState({k: feats.tensors[k] for k in self.dynamic}, {k: feats.tensors[k] for k in self.static})

    def step(self, prev: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, DecoderState]:
        """Logits (B, V), attention (B, N) and the next state, from the step graph."""
        out = self.run("step", prev, *(state.dynamic[k] for k in self.dynamic),
                       *(state.static[k] for k in self.static))
        return out[0], out[1], DecoderState(dict(zip(self.dynamic, out[2:])), state.static)


class ExportedRAGCaptioner(ExportedCaptioner):
    """The retrieval-augmented captioner, whose neighbours' captions the reranking reads."""

    def neighbour_captions(self, feats: EncodedImages) -> list[list[list[int]]]:
        """The token ids of each image's nearest memory captions (from the encoder's ``nb_tokens``)."""
        tokens = feats.tensors["nb_tokens"]                                     # (B, k * L)
        rows = tokens.view(tokens.shape[0], -1, int(self.info["memory_len"])).tolist()  # (B, k, L)
        return memory_captions(rows, self.pad_id, self.eos_id)


class ExportedDualEncoder(ExportedModel):
    """A dual encoder: ``encode_image`` and ``encode_text`` from the image and text graphs."""

    @property
    def embed_dim(self) -> int:
        return int(self.info["embed_dim"])

    def encode_image(self, images: Tensor) -> Tensor:
        return self.run("image", images)[0]                                    # (B, E)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.run("text", input_ids, attention_mask)[0]                  # (B, E)

    def region_scores(self, images: Tensor, queries: Tensor) -> Any:
        raise VislangError("match maps need the eager model (its image grid and projection); load the model "
                           "folder without runtime='onnx'")


class ExportedFusionModel(ExportedModel):
    """A VQA model or image + text classifier: ``forward`` from the fusion graph."""

    @property
    def modalities(self) -> list[str]:
        return list(self.info["modalities"])

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                image_index: Tensor | None = None) -> FusionModelOutput:
        if image_index is None:
            image_index = torch.arange(input_ids.shape[0])
        out = dict(zip(self.manifest["graphs"]["fusion"]["outputs"],
                       self.run("fusion", images, input_ids, attention_mask, image_index)))
        return FusionModelOutput(out["logits"], out.get("attention"), tuple(self.info["grid_hw"]),
                                 out.get("modality_weights"))


class ExportedRegionTagger(ExportedModel):
    """A region tagger: ``forward`` from the tagger graph."""

    def forward(self, images: Tensor) -> RegionTaggerOutput:
        return RegionTaggerOutput(dict(zip(self.info["attributes"], self.run("tagger", images))),
                                  tuple(self.info["grid_hw"]))


class ExportedDiffusion(ExportedModel):
    """A text-to-image model: the text graph, the UNet step graph, and the model's own Python samplers
    (:meth:`TextToImageDiffusion.sample <vislang.models.diffusion_unet.TextToImageDiffusion.sample>`)."""

    noise_scheduler = TextToImageDiffusion.noise_scheduler
    sample = TextToImageDiffusion.sample

    def __init__(self, graphs: dict[str, Graph], manifest: dict[str, Any], config: dict[str, Any]):
        super().__init__(graphs, manifest, config)
        self.cfg = model_config(config["model"], **config.get("model_config", {}))

    @property
    def image_size(self) -> int:
        return int(self.cfg.image_size)

    @property
    def ema_unet(self) -> nn.Module:
        raise VislangError("explanations record the UNet's cross-attention, which needs the eager model; load "
                           "the model folder without runtime='onnx'")

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextContext:
        states = self.run("text", input_ids, attention_mask)[0]                # (B, L, D)
        if self.info.get("locked"):   # as the eager model's cache: nothing at the padding
            states = states * (attention_mask > 0).unsqueeze(-1).to(states.dtype)
            return TextContext(states, (attention_mask > 0).long())
        return TextContext(states, attention_mask)

    def forward(self, noisy: Tensor, timesteps: Tensor, context: TextContext, *, ema: bool = True) -> Tensor:
        """Predicted noise (B, 3, S, S) of the EMA UNet (the only one exported)."""
        return self.run("unet", noisy, timesteps.long(), context.states, context.mask)[0]


RUNTIME_MODELS: dict[str, type[ExportedModel]] = {
    "caption_lstm": ExportedCaptioner, "caption_transformer": ExportedCaptioner,
    "caption_rag": ExportedRAGCaptioner, "dual_encoder": ExportedDualEncoder,
    "dual_encoder_ensemble": ExportedDualEncoder,
    "fusion_model": ExportedFusionModel, "region_tagger": ExportedRegionTagger,
    "diffusion_unet": ExportedDiffusion}
"""Model family -> the stand-in the predictors use."""
