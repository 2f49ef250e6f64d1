"""Text-to-image generation as a task of the shared training loop: a text-conditional diffusion model trained
by noise prediction (diffusers' DDPM schedule), with the caption dropped for some samples (classifier-free
guidance) and an EMA of the weights; validation is the EMA model's noise-prediction error at fixed noise levels
on the validation images (fixed noise, so it compares across checkpoints).

``vislang train generate`` / ``vislang.train("generate", ...)``; ``vislang.load(run).generate([...])``;
``vislang evaluate generate`` (:mod:`vislang.tasks.generate_eval`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.records import Record
from vislang.data.text import VOCAB_FILE, TextTokenizer, Vocabulary
from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError
from vislang.models.diffusion_unet import TextContext, pad_context
from vislang.models.registry import model_config
from vislang.models.text_encoders import HF_TOWERS, saved_tokenizer, text_tokenizer, tokenizer_source
from vislang.tasks.base import TaskSpec, TrainData, register_task
from vislang.tasks.common import DataConfig
from vislang.train import TrainConfig
from vislang.utils.tensors import lengths_to_mask, model_device, pad_sequences


@dataclass
class GenerateTaskConfig:
    """Generation options (read by :class:`GenerateTask`).

    Attributes:
        max_len: Longest caption in tokens (special tokens included); longer prompts are truncated.
        cond_dropout: Fraction of training samples whose caption is replaced by the empty one, so the model
            also learns the unconditional prediction that classifier-free guidance needs.
        snr_gamma: Min-SNR loss weighting (Hang et al., 2023): each sample's noise-prediction error is weighted
            by ``min(SNR(t), gamma) / SNR(t)``, so the nearly clean timesteps do not dominate training; None: the
            plain mean squared error.
        val_noise_levels: Noise levels (evenly spread over the schedule) at which each validation image is
            scored.
        val_batch_size: Images per validation batch.
    """

    max_len: int = 32
    cond_dropout: float = 0.1
    snr_gamma: float | None = 5.0
    val_noise_levels: int = 4
    val_batch_size: int = 64


def _default_data() -> DataConfig:
    return DataConfig(transform=TransformConfig(image_size=32, trim=True, augment=False))


@dataclass
class GenerateRunConfig:
    """Everything a generation run needs; saved as ``config.yaml`` in the run directory.

    Attributes:
        model: Registered generator name (``diffusion_unet``, ``diffusion_unet_tiny``).
        text_encoder: ``minilm`` (the locked pre-trained tower, default of ``diffusion_unet``), ``scratch`` (a
            Transformer over the training captions' words, trained with the UNet), or a Hugging Face model
            directory (locked); None: the model's own.
        model_kwargs: Options of the model builder (``image_size`` is set from ``data.transform.image_size``).
        data: Data section.
        task: Generation options.
        train: Loop options.
    """

    model: str = "diffusion_unet"
    text_encoder: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=_default_data)
    task: GenerateTaskConfig = field(default_factory=GenerateTaskConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=32))


# ------------------------------------------------------------------------------------- images and texts


def to_model_range(images: Tensor, tf: TransformConfig) -> Tensor:
    """Normalised images (the transform's mean/std) ``(B, 3, S, S)`` -> pixels in [-1, 1]."""
    mean = images.new_tensor(tf.mean).view(1, 3, 1, 1)
    std = images.new_tensor(tf.std).view(1, 3, 1, 1)
    return (images * std + mean) * 2.0 - 1.0


def to_unit_range(images: Tensor) -> Tensor:
    """Model output in [-1, 1] -> pixels in [0, 1]."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


def tokenize(tokenizer: TextTokenizer, texts: Sequence[str], max_len: int,
             device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Token ids ``(B, L)`` and attention mask ``(B, L)`` of ``texts`` (each truncated to ``max_len``)."""
    ids = [tokenizer.encode(t, max_len=max_len) for t in texts]
    tokens, lengths = pad_sequences(ids, tokenizer.pad_id)                           # (B, L), (B,)
    mask = lengths_to_mask(lengths, tokens.shape[1], dtype=torch.long)              # (B, L)
    return tokens.to(device), mask.to(device)


def text_context(model: nn.Module, tokenizer: TextTokenizer, texts: Sequence[str], max_len: int) -> TextContext:
    """The cross-attention context of ``texts`` (the empty text is the unconditional one)."""
    return model.encode_text(*tokenize(tokenizer, texts, max_len, model_device(model)))


@torch.no_grad()
def sample_images(model: nn.Module, tokenizer: TextTokenizer, texts: Sequence[str], max_len: int, *,
                  guidance: float, steps: int, seed: int, sampler: str = "ddim", batch_size: int = 16,
                  on_batch: Callable[[int], None] | None = None) -> Tensor:
    """Images ``(N, 3, S, S)`` in [0, 1] (CPU) of a generator's EMA weights, one per text; image ``j`` starts
    from the noise of seed ``seed + j`` (whatever the batch it is drawn in). ``on_batch(k)`` after each batch
    of ``k`` images (progress)."""
    size, device = int(model.image_size), model_device(model)
    uncond = text_context(model, tokenizer, [""], max_len)
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        noise = torch.cat([seed_noise(seed + start + i, size) for i in range(len(chunk))])     # (B, 3, S, S)
        x = model.sample(text_context(model, tokenizer, chunk, max_len), uncond, guidance=guidance, steps=steps,
                         sampler=sampler, noise=noise.to(device))
        out.append(to_unit_range(x).float().cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    return torch.cat(out) if out else torch.empty(0, 3, size, size)


def seed_noise(seed: int, size: int) -> Tensor:
    """The starting noise ``(1, 3, size, size)`` of seed ``seed``."""
    return torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(int(seed)))


def to_pil(image: Tensor) -> Image.Image:
    """A ``(3, S, S)`` tensor in [0, 1] as an 8-bit RGB image."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


# ------------------------------------------------------------------------------------------------ the loop


class GenerateTask:
    """Batch -> noise-prediction loss; validation -> the EMA model's error at fixed noise on the val images.

    Args:
        tokenizer: The text tower's tokenizer.
        val_records: Validation images with captions (their first caption conditions them).
        eval_transform: Image -> tensor for validation.
        tf: The transform config (its mean/std undo the normalisation).
        cfg: Task options.
    """

    monitor = "val_loss"
    mode = "min"

    def __init__(self, tokenizer: TextTokenizer, val_records: Sequence[Record], eval_transform: Any,
                 tf: TransformConfig, cfg: GenerateTaskConfig):
        self.tokenizer, self.val_records, self.eval_transform = tokenizer, list(val_records), eval_transform
        self.tf, self.cfg = tf, cfg
        self._scheduler: Any = None  # the training noise schedule, built once

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        x0 = to_model_range(batch["image"], self.tf)                                  # (B, 3, S, S)
        tokens = batch["tokens"]                                                      # (B, L)
        mask = lengths_to_mask(batch["tokens_lengths"], tokens.shape[1], dtype=torch.long)
        if self._scheduler is None:
            self._scheduler = model.noise_scheduler("ddpm")
        scheduler = self._scheduler
        noise, t, drop = sample_draws(batch, x0, scheduler.config.num_train_timesteps, self.cfg.cond_dropout)
        context = self._drop_captions(model, model.encode_text(tokens, mask), drop)
        noisy = scheduler.add_noise(x0, noise, t)
        eps = model(noisy, t, context)
        err = (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))                          # (B,)
        if self.cfg.snr_gamma is None:
            return {"loss": err.mean()}
        alpha_bar = scheduler.alphas_cumprod.to(x0.device)[t]                          # (B,)
        snr = alpha_bar / (1.0 - alpha_bar)
        weight = snr.clamp(max=self.cfg.snr_gamma) / snr
        return {"loss": (weight * err).mean(), "mse": err.mean().detach()}

    def _drop_captions(self, model: nn.Module, context: TextContext, drop: Tensor) -> TextContext:
        """Replace the context of the samples where ``drop`` ``(B,)`` is true by the empty caption's."""
        b = context.states.shape[0]
        if not bool(drop.any()):
            return context
        empty = text_context(model, self.tokenizer, [""], self.cfg.max_len)
        n = max(context.states.shape[1], empty.states.shape[1])
        context, empty = pad_context(context, n), pad_context(empty, n)
        return TextContext(torch.where(drop.view(b, 1, 1), empty.states, context.states),  # (1, n, D) broadcasts
                           torch.where(drop.view(b, 1), empty.mask, context.mask))

    def after_optimizer_step(self, model: nn.Module) -> None:
        model.update_ema()

    def validate(self, model: nn.Module) -> dict[str, float]:
        return self.score_val(self.val_records, self.predict_val(model, self.val_records))

    def predict_val(self, model: nn.Module, records: Sequence[Record]) -> list[float]:
        """Per record (under torchrun, those of this rank's part): its noise-prediction error summed over the
        noise levels, at the noise the whole split draws (so the parts add up to one process's number)."""
        if not records:
            return []
        noise = self._val_noise(model)                                             # (N, levels, 3, S, S)
        rows = {id(r): j for j, r in enumerate(self.val_records)}
        picked = noise[torch.tensor([rows[id(r)] for r in records])]
        return validation_errors(model, self.tokenizer, records, picked, self.eval_transform, self.tf, self.cfg)

    def score_val(self, records: Sequence[Record], errors: list[float]) -> dict[str, float]:
        """The mean squared noise-prediction error over every record and noise level."""
        return {"val_loss": sum(errors) / (len(errors) * self.cfg.val_noise_levels) if errors else float("nan")}

    def _val_noise(self, model: nn.Module) -> Tensor:
        """The fixed validation noise ``(N, levels, 3, S, S)``: drawn from seed 0 a batch of
        ``val_batch_size`` and a level at a time over the whole split (built once)."""
        if getattr(self, "_noise", None) is None:
            size, bs, levels = int(model.image_size), self.cfg.val_batch_size, self.cfg.val_noise_levels
            gen = torch.Generator().manual_seed(0)
            noise = torch.empty(len(self.val_records), levels, 3, size, size)
            for start in range(0, len(self.val_records), bs):
                stop = min(start + bs, len(self.val_records))
                for level in range(levels):
                    noise[start:stop, level] = torch.randn((stop - start, 3, size, size), generator=gen)
            self._noise = noise
        return self._noise

    def save_artifacts(self, directory: Path) -> None:
        if isinstance(self.tokenizer, Vocabulary):
            self.tokenizer.save(Path(directory) / VOCAB_FILE)


def sample_draws(batch: dict[str, Any], x0: Tensor, timesteps: int, cond_dropout: float
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """A training batch's noise ``(B, 3, S, S)``, timesteps ``(B,)`` and caption-drop mask ``(B,)``: each
    sample's drawn from a generator of its own, seeded from the sample's seed (``batch["seed"]``, from the
    seeded sampler), so that a sample is noised the same way whatever its batch, rank or worker (N ranks of B
    train exactly like one process of N·B; resume repeats the draws). Without seeds, torch's global RNG."""
    b, device = len(x0), x0.device
    if "seed" not in batch:
        return (torch.randn_like(x0), torch.randint(0, timesteps, (b,), device=device),
                torch.rand(b, device=device) < cond_dropout)
    noise, t, u = torch.empty(x0.shape), torch.empty(b, dtype=torch.long), torch.empty(b)
    gen = torch.Generator()
    for i, seed in enumerate(batch["seed"].tolist()):
        # a stream apart from the one the sample's image augmentations drew from (seeded with ``seed`` itself)
        gen.manual_seed((int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**63)
        noise[i] = torch.randn(x0.shape[1:], generator=gen)
        t[i] = int(torch.randint(0, timesteps, (1,), generator=gen))
        u[i] = float(torch.rand((), generator=gen))
    return (noise.to(device, x0.dtype, non_blocking=True), t.to(device, non_blocking=True),
            (u < cond_dropout).to(device))


@torch.no_grad()
def validation_errors(model: nn.Module, tokenizer: TextTokenizer, records: Sequence[Record], noise: Tensor,
                      transform: Any, tf: TransformConfig, cfg: GenerateTaskConfig, *, ema: bool = True) -> list[float]:
    """Per record, the squared noise-prediction error (mean over pixels) summed over ``cfg.val_noise_levels``
    evenly spread timesteps, each record (first caption) noised with its ``noise`` ``(N, levels, 3, S, S)``:
    the same numbers for the same weights."""
    device = model_device(model)
    scheduler = model.noise_scheduler("ddpm")
    total = scheduler.config.num_train_timesteps
    levels = [int((j + 0.5) * total / cfg.val_noise_levels) for j in range(cfg.val_noise_levels)]
    loader = build_loader(ImageTextSamples(records, transform, unit="image"), cfg.val_batch_size)
    errors: list[float] = []
    for batch in loader:
        x0 = to_model_range(batch["image"], tf).to(device)                               # (B, 3, S, S)
        context = text_context(model, tokenizer, [c[0] if c else "" for c in batch["captions"]], cfg.max_len)
        per = torch.zeros(len(x0))
        for k, level in enumerate(levels):
            eps_true = noise[batch["index"], k].to(device)                                # (B, 3, S, S)
            t = torch.full((len(x0),), level, device=device, dtype=torch.long)
            eps = model(scheduler.add_noise(x0, eps_true, t), t, context, ema=ema)
            per += (eps.float() - eps_true).pow(2).mean(dim=(1, 2, 3)).cpu()
        errors += per.tolist()
    return errors


# ------------------------------------------------------------------------------------------------ the task


def resolve_text_encoder(cfg: GenerateRunConfig) -> dict[str, Any]:
    """The ``text_encoder`` / ``text_mode`` model options the ``--text-encoder`` choice stands for."""
    choice = cfg.text_encoder
    if choice is None:
        return {}
    if choice == "scratch":  # the model's own tower when it is one trained from scratch, else a Transformer
        if model_config(cfg.model).text_encoder not in HF_TOWERS:
            return {"text_mode": "scratch"}
        return {"text_encoder": "text_transformer", "text_encoder_kwargs": {}, "text_mode": "scratch"}
    if choice == "minilm":
        return {"text_encoder": "minilm", "text_encoder_kwargs": {}, "text_mode": "locked"}
    if Path(choice).is_dir():
        return {"text_encoder": "hf_text", "text_encoder_kwargs": {"path": str(Path(choice).resolve())},
                "text_mode": "locked"}
    raise VislangError(f"text encoder {choice!r}: use scratch, minilm or the directory of a Hugging Face text model")


@register_task("generate")
class Generation(TaskSpec):
    """Text-to-image generation: a text-conditional diffusion model (noise prediction, classifier-free
    guidance, EMA), validated by its noise-prediction error at fixed noise.

    The task's artifact is the text tower's tokenizer: its own (a pre-trained tower) or a vocabulary of the
    training captions (``vocab.json``, a tower trained from scratch).
    """

    config = GenerateRunConfig
    help = "text-to-image generation (text-conditional diffusion UNet)"
    monitor_label = "validation noise-prediction MSE"
    predictor = "vislang.inference.generate:GeneratePredictor"
    train_flags = {"text_encoder": ("text_encoder", {
        "metavar": "TOWER",
        "help": "text tower: minilm (locked all-MiniLM-L6-v2, default), scratch (a Transformer over the training "
                "captions' words, the ablation) or a Hugging Face model directory (locked)"})}
    evaluation = "vislang.tasks.generate_eval"
    evaluate_help = "generate images for a split's captions and judge them with a separately trained retrieval model"
    evaluate_description = ("Generate an image for each distinct caption of a split and judge it with a separately "
                            "trained retrieval model: alignment (R@1/R@5, mean cosine) beside the real images "
                            "(ceiling) and shuffled prompts (floor), Frechet distance in the judge's feature space "
                            "beside real-vs-real and a trivial generator, memorisation distances, and the "
                            "retrieve-the-nearest-caption baseline; writes a table and report.html.")

    def check(self, cfg: GenerateRunConfig) -> None:
        if not 0.0 <= cfg.task.cond_dropout < 1.0:
            raise VislangError(f"task.cond_dropout must be in [0, 1), not {cfg.task.cond_dropout}")
        if cfg.task.snr_gamma is not None and cfg.task.snr_gamma <= 0:
            raise VislangError(f"task.snr_gamma must be > 0 (or null), not {cfg.task.snr_gamma}")
        if cfg.task.val_noise_levels < 1 or cfg.task.max_len < 3:
            raise VislangError("task.val_noise_levels must be >= 1 and task.max_len >= 3")
        model_config(cfg.model, **self._model_kwargs(cfg, {}))  # a bad size or tower fails before data is read

    def _model_kwargs(self, cfg: GenerateRunConfig, extra: dict[str, Any]) -> dict[str, Any]:
        return {**cfg.model_kwargs, "image_size": cfg.data.transform.image_size, **resolve_text_encoder(cfg), **extra}

    def open_data(self, cfg: GenerateRunConfig) -> TrainData:
        data = super().open_data(cfg)
        train = [r for r in data.train if r.captions]
        if not train:
            raise VislangError(f"{cfg.data.name} [{cfg.data.train_split}] has no captions to train a generator on")
        return TrainData(train, data.val)

    def open_val(self, cfg: GenerateRunConfig, split: str) -> list[Record]:
        return [r for r in super().open_val(cfg, split) if r.captions]

    def prepare(self, cfg: GenerateRunConfig, data: TrainData, reuse: Path | None) -> TextTokenizer:
        options = model_config(cfg.model, **self._model_kwargs(cfg, {}))
        tokenizer = text_tokenizer(options.text_encoder, options.text_encoder_kwargs)
        if tokenizer is not None:
            return tokenizer
        if options.text_encoder in HF_TOWERS:
            raise VislangError(f"cannot tell the tokenizer of text tower {options.text_encoder!r}")
        if reuse is not None and (reuse / VOCAB_FILE).exists():
            return Vocabulary.load(reuse / VOCAB_FILE)
        return Vocabulary.build(c for r in data.train for c in r.captions)

    def model_options(self, cfg: GenerateRunConfig, tokenizer: TextTokenizer, data: TrainData) -> dict[str, Any]:
        options = model_config(cfg.model, **self._model_kwargs(cfg, {}))
        text_kwargs = dict(options.text_encoder_kwargs)
        if isinstance(tokenizer, Vocabulary):  # a tower over the training captions' words
            text_kwargs.update(vocab_size=len(tokenizer), pad_id=tokenizer.pad_id)
            if options.text_encoder.startswith("text_transformer"):
                text_kwargs["max_len"] = cfg.task.max_len
        return self._model_kwargs(cfg, {"text_encoder": options.text_encoder, "text_encoder_kwargs": text_kwargs,
                                        "text_mode": options.text_mode})

    def samples(self, cfg: GenerateRunConfig, data: TrainData, tokenizer: TextTokenizer, transform) -> ImageTextSamples:
        return ImageTextSamples(data.train, transform, unit="image_caption", tokenizer=tokenizer,
                                max_len=cfg.task.max_len, skip_bad=cfg.data.skip_bad)

    def objective(self, cfg: GenerateRunConfig, model: nn.Module, data: TrainData, tokenizer: TextTokenizer,
                  transform) -> GenerateTask:
        if getattr(model, "locked", False):  # a locked tower: every caption through it once, in batches by length
            captions = sorted({c for r in [*data.train, *data.val] for c in r.captions}, key=len)
            for start in range(0, len(captions), 256):
                text_context(model, tokenizer, captions[start:start + 256], cfg.task.max_len)
        return GenerateTask(tokenizer, data.val, transform, cfg.data.transform, cfg.task)

    def extra(self, cfg: GenerateRunConfig, tokenizer: TextTokenizer) -> dict[str, Any]:
        return {"max_len": cfg.task.max_len,
                "tokenizer": tokenizer_source(tokenizer)}

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> TextTokenizer:
        return saved_tokenizer(folder, config)
