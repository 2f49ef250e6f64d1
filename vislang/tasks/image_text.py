"""What the image + text tasks (VQA and classification) share: a fusion model reading an image and a tokenized
text into class scores, its text side (tower and tokenizer), the blanked-modality baselines, and the TaskSpec
parts that are the same for both (``--fusion`` / ``--text-encoder``, artifacts, saved entries) and their
``vislang evaluate`` commands."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vislang.data.records import Record
from vislang.data.text import VOCAB_FILE, TextTokenizer, Vocabulary
from vislang.errors import VislangError
from vislang.models.fusion_model import FusionModelOutput, fusion_model_config
from vislang.models.registry import list_models
from vislang.models.text_encoders import HF_TOWERS, saved_tokenizer, text_tokenizer
from vislang.tasks.base import TaskSpec, TrainData, add_split_args, eval_dir
from vislang.tasks.common import MODALITY_MODES, DataConfig, blank_inputs, check_at_least_one
from vislang.train import TrainConfig
from vislang.utils.distributed import is_main
from vislang.utils.tensors import lengths_to_mask, model_device

# --------------------------------------------------------------------------------------------- config


@dataclass
class ImageTextRunConfig:
    """The fields every image + text run has (VQA and classification runs set their own defaults).

    Attributes:
        model: Registered fusion model.
        model_kwargs: Overrides for the builder (``image_encoder``, ``fusion_kwargs``, ...).
        fusion: Fusion strategy (``late-concat``, ``attention``, ``bilinear``, ``transformer``, ...); None: the
            model's own.
        text_encoder: Text encoder: ``gru``, ``transformer``, ``minilm``, a registered text encoder or a
            Hugging Face model directory; None: the model's own.
        data: Data section.
        task: The task's options.
        train: Loop options.
    """

    model: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    fusion: str | None = None
    text_encoder: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    task: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)


def resolve_text_encoder(choice: str | None, preset_name: str, kwargs: dict[str, Any]) -> tuple[str, dict, str]:
    """The text tower, its kwargs and text mode for a ``text_encoder`` choice over a fusion model preset."""
    preset = fusion_model_config(preset_name, **kwargs)
    name, tkw, mode = preset.text_encoder, dict(preset.text_encoder_kwargs), preset.text_mode
    tiny = name.endswith("_tiny")
    if choice in (None, ""):
        return name, tkw, mode
    if choice in ("gru", "transformer"):
        name, tkw, mode = f"text_{choice}" + ("_tiny" if tiny else ""), {}, "scratch"
    elif choice == "minilm":
        name, tkw, mode = "minilm", {}, "locked"
    elif choice in list_models("text_*"):
        name, tkw, mode = choice, {}, "scratch"
    elif Path(choice).is_dir():
        name, tkw, mode = "hf_text", {"path": str(Path(choice).resolve())}, "locked"
    else:
        raise VislangError(f"text encoder {choice!r}: not 'gru', 'transformer', 'minilm', a registered text "
                           f"encoder ({', '.join(list_models('text_*'))}) or a Hugging Face model directory")
    return name, tkw, kwargs.get("text_mode", mode)


def build_text_side(choice: str | None, model: str, model_kwargs: dict[str, Any], texts: Callable[[], list[str]],
                    *, max_len: int, min_freq: int, vocab_path: Path | None = None
                    ) -> tuple[TextTokenizer, dict[str, Any]]:
    """The tokenizer and the full builder kwargs (text tower settled) of an image + text run.

    Args:
        choice: The run's ``text_encoder`` choice.
        model: Registered fusion model name.
        model_kwargs: The run's model overrides.
        texts: The training texts (to build a vocabulary for towers trained from scratch).
        max_len: Longest token sequence.
        min_freq: Vocabulary threshold.
        vocab_path: An existing vocabulary to reuse (resuming), when it exists.
    """
    name, tkw, mode = resolve_text_encoder(choice, model, model_kwargs)
    tokenizer = text_tokenizer(name, tkw)
    if tokenizer is None:
        if vocab_path is not None and vocab_path.exists():
            tokenizer = Vocabulary.load(vocab_path)
        else:
            tokenizer = Vocabulary.build(texts(), min_freq=min_freq)
        tkw = {**tkw, "vocab_size": len(tokenizer), "pad_id": tokenizer.pad_id}
        if name.startswith("text_transformer"):
            tkw["max_len"] = max_len
    elif name in HF_TOWERS and mode == "scratch":
        mode = "locked"
    return tokenizer, {**model_kwargs, "text_encoder": name, "text_encoder_kwargs": tkw, "text_mode": mode}


# ---------------------------------------------------------------------------------------- model inputs


def check_mode(mode: str) -> None:
    """Refuse a mode that is not one of :data:`~vislang.tasks.common.MODALITY_MODES`."""
    if mode not in MODALITY_MODES:
        raise VislangError(f"mode must be one of {', '.join(MODALITY_MODES)}, not {mode!r}")


def blank(tokenizer: TextTokenizer, images: Tensor, tokens: Tensor, lengths: Tensor, *,
          blank_image: Tensor | None = None, blank_text: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`~vislang.tasks.common.blank_inputs` with the tokenizer's special ids."""
    return blank_inputs(images, tokens, lengths, blank_image=blank_image, blank_text=blank_text,
                        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)


def blank_modality(mode: str, tokenizer: TextTokenizer, images: Tensor, tokens: Tensor, lengths: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """The inputs as ``mode`` gives them: ``"text"`` blanks every image, ``"image"`` every text."""
    blank_image = torch.ones(len(images), dtype=torch.bool) if mode == "text" else None
    blank_text = torch.ones(len(tokens), dtype=torch.bool) if mode == "image" else None
    return blank(tokenizer, images, tokens, lengths, blank_image=blank_image, blank_text=blank_text)


def run_fusion(model: nn.Module, images: Tensor, tokens: Tensor, lengths: Tensor,
               image_index: Tensor | None = None) -> FusionModelOutput:
    """The fusion model on a batch, moved to its device: ``images`` ``(B, 3, H, W)``, ``tokens`` ``(Q, L)``,
    ``lengths`` ``(Q,)`` and ``image_index`` ``(Q,)`` (text ``q`` goes with image ``image_index[q]``; None:
    one text per image)."""
    device = model_device(model)
    mask = lengths_to_mask(lengths, tokens.shape[1], dtype=torch.long)                 # (Q, L)
    return model(images.to(device), tokens.to(device), mask.to(device),
                 None if image_index is None else image_index.to(device))


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------------------- the task


@dataclass
class ImageTextArtifacts:
    """What an image + text model needs besides its weights.

    Attributes:
        tokenizer: Tokenizer of the text encoder (``vocab.json``, or the pre-trained tower's own).
        labels: The outputs: the answer vocabulary (VQA) or the class space (classification).
        options: The builder options (text tower settled, ``num_classes``).
        max_len: Longest text in tokens (BOS/EOS included).
    """

    tokenizer: TextTokenizer
    labels: Any
    options: dict[str, Any]
    max_len: int


class ImageTextObjective:
    """The part of a VQA / classification loop task that both share: the tokenizer, the outputs, the validation
    records, the options and loss, and saving the outputs beside the checkpoint.

    Args:
        tokenizer: Tokenizer of the text encoder.
        labels: The outputs: the answer vocabulary (VQA) or the class space (classification), with ``file``
            (its name in a model folder) and ``save``.
        val_records: Validation records (as :meth:`validation_records` keeps them).
        eval_transform: Image -> tensor for validation.
        cfg: Task options (None: the defaults of :attr:`config_type`).
    """

    monitor = "accuracy"
    mode = "max"
    config_type: ClassVar[type] = object

    def __init__(self, tokenizer: TextTokenizer, labels: Any, val_records: Sequence[Record],
                 eval_transform: Callable[[Any], Tensor], cfg: Any = None):
        self.tokenizer, self.labels = tokenizer, labels
        self.cfg = cfg or self.config_type()
        self.val_records, self.eval_transform = self.validation_records(val_records), eval_transform
        self.loss = self.build_loss()

    def validation_records(self, records: Sequence[Record]) -> list[Record]:
        """The validation records as :meth:`validate` reads them."""
        return list(records)

    def build_loss(self) -> nn.Module:
        """The training loss (from ``self.cfg``)."""
        raise NotImplementedError

    def save_artifacts(self, directory: Path) -> None:
        self.labels.save(Path(directory) / self.labels.file)
        if isinstance(self.tokenizer, Vocabulary):
            self.tokenizer.save(Path(directory) / VOCAB_FILE)


class ImageTextSpec(TaskSpec):
    """The TaskSpec parts VQA and classification share: ``--fusion`` / ``--text-encoder``, the text side, the
    builder options, what ``config.json`` keeps and the artifacts of a model folder.

    Attributes:
        labels_type: The class of the outputs (with ``load`` and ``file``, their name in a model folder:
            ``answers.json``, ``classes.json``).
    """

    labels_type: ClassVar[type] = object
    train_flags = {
        "fusion": ("fusion", {"metavar": "STRATEGY", "help": "fusion strategy: late-concat, late-sum, late-product, "
                              "late-gating, attention, modality-attention, multihead, bilinear, transformer, "
                              "co-attention (see vislang.fusion.list_fusions)"}),
        "text_encoder": ("text_encoder", {"metavar": "TOWER", "help": "text encoder: gru, transformer (from "
                                          "scratch), minilm (pre-trained, locked) or a Hugging Face model directory "
                                          "(default: the model's own)"}),
    }

    def check(self, cfg: Any) -> None:
        if not 0.0 <= cfg.task.modality_dropout < 0.5:
            raise VislangError(f"task.modality_dropout must be in [0, 0.5), got {cfg.task.modality_dropout}")

    def reuse_labels(self, reuse: Path | None) -> Any:
        """The outputs saved in ``reuse`` (resuming), or None."""
        if reuse is not None and (reuse / self.labels_type.file).exists():
            return self.labels_type.load(reuse / self.labels_type.file)
        return None

    def text_side(self, cfg: Any, labels: Any, texts: Callable[[], list[str]], reuse: Path | None
                  ) -> ImageTextArtifacts:
        """The artifacts of a run: the text side settled (vocabulary from ``texts`` or ``reuse``) over
        ``cfg.model_kwargs`` (with ``cfg.fusion``), one output per label."""
        model_kwargs = dict(cfg.model_kwargs)
        if cfg.fusion:
            model_kwargs["fusion"] = cfg.fusion
        tokenizer, options = build_text_side(cfg.text_encoder, cfg.model, model_kwargs, texts,
                                             max_len=cfg.task.max_len, min_freq=cfg.task.min_freq,
                                             vocab_path=reuse / VOCAB_FILE if reuse is not None else None)
        options["num_classes"] = len(labels)
        return ImageTextArtifacts(tokenizer, labels, options, cfg.task.max_len)

    def model_options(self, cfg: Any, artifacts: ImageTextArtifacts, data: TrainData) -> dict[str, Any]:
        return artifacts.options

    def extra(self, cfg: Any, artifacts: ImageTextArtifacts) -> dict[str, Any]:
        return {"max_len": artifacts.max_len,
                "tokenizer": VOCAB_FILE if isinstance(artifacts.tokenizer, Vocabulary) else "text_encoder"}

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> ImageTextArtifacts:
        max_len = int(config.get("max_len", self.config().task.max_len))
        labels = self.labels_type.load(folder / self.labels_type.file)
        return ImageTextArtifacts(saved_tokenizer(folder, config), labels, dict(config.get("model_config", {})),
                                  max_len)


EvaluateCommand = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def image_text_evaluate_command(command: str, evaluate: Callable[..., Any], *, data_help: str,
                                image_root_help: str) -> EvaluateCommand:
    """The ``add_evaluate_args(parser)`` and ``run_evaluate(args)`` of ``vislang evaluate vqa`` / ``classify``.

    Args:
        command: The task (``vqa``, ``classify``).
        evaluate: Its ``evaluate_*_model(run, data, split, *, root, image_root, limit, skip_bad, baselines,
            batch_size, device, out_dir)``; the evaluation it returns has ``headline()`` and ``table()`` (printed)
            and ``written(out)`` (the closing line: what it wrote to the output folder).
        data_help: Help of ``--data``.
        image_root_help: Help of ``--image-root``.
    """

    def add_evaluate_args(p: argparse.ArgumentParser) -> None:
        """The options of ``vislang evaluate <command>``."""
        add_split_args(p, command, data_help, image_root_help)
        p.add_argument("--limit", type=int, help="evaluate only the first N images")
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--skip-bad", action="store_true", help="leave out images that are missing or unreadable")
        p.add_argument("--no-baselines", action="store_true", help="score only the model")
        p.add_argument("--device", default="auto")
        p.add_argument("--out", type=Path, help="output folder (default: <run>/eval/<data>_<split>)")

    def run_evaluate(args: argparse.Namespace) -> int:
        """Score a run and its baselines on a split, print the table, write the scores (exit code 0)."""
        check_at_least_one(batch_size=args.batch_size)
        out = eval_dir(args)
        ev = evaluate(args.model, args.data, args.split, root=args.root, image_root=args.image_root,
                      limit=args.limit, skip_bad=args.skip_bad, baselines=not args.no_baselines,
                      batch_size=args.batch_size, device=args.device,
                      out_dir=out if is_main() else None)  # under torchrun rank 0 writes
        print(ev.headline())
        print(ev.table())
        print(ev.written(out))
        return 0

    return add_evaluate_args, run_evaluate


def evaluated_modes(baselines: bool) -> tuple[str, ...]:
    """The modes an evaluation runs: the model, and with ``baselines`` its text-only and image-only runs."""
    return MODALITY_MODES if baselines else ("both",)
