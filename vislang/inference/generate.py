"""Generating images from text: ``vislang.load("runs/gen").generate(["a red heart"], n=4, seed=0)``.

```python
gen = vislang.load("runs/gen")
out = gen.generate(["a red heart with a smiling face"], n=8, guidance=3.0, steps=50, seed=0)
out[0].image.save("heart.png")                  # PIL image; out[i].seed reproduces sample i alone
why = gen.explain("a blue cat", seed=0)          # GenerationExplanation: one cross-attention map per token
```

Sample ``j`` of a call (prompts in order, ``n`` each) starts from the noise of seed ``seed + j``, so a sample
does not depend on the batch it was drawn in, and the DDIM and DPM-Solver samplers are deterministic after that.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from vislang.errors import VislangError
from vislang.inference.base import Predictor
from vislang.models.diffusion_unet import SAMPLERS, TextContext, record_cross_attention
from vislang.tasks.generate import sample_images, seed_noise, text_context, to_pil, to_unit_range

MAX_SAMPLES = 256
"""Most images one call generates (``len(prompts) * n``)."""


@dataclass
class Generated:
    """One generated image.

    Attributes:
        prompt: The prompt as given.
        image: The image (RGB, the model's size).
        seed: The seed of its starting noise: ``generate([prompt], n=1, seed=seed)`` draws it again (to float
            rounding: drawn in another batch, its values may differ by ~1e-5, an 8-bit pixel rarely by one level).
        warning: Set when the prompt was changed (truncated to the model's longest caption).
    """

    prompt: str
    image: Image.Image
    seed: int
    warning: str | None = None


@dataclass
class GenerationExplanation:
    """What each token of a prompt drew (:meth:`GeneratePredictor.explain`).

    Attributes:
        prompt: The prompt.
        image: The generated image.
        tokens: The prompt's tokens as the text tower reads them, special ones included and named ``[start]``,
            ``[end]`` (:func:`token_names`).
        maps: ``(T, h, w)`` cross-attention of each token, averaged over the heads, layers and sampling steps
            (the conditional half of guidance), each map summing to 1 over the image.
        weights: ``(T,)`` share of the total attention each token received.
    """

    prompt: str
    image: Image.Image
    tokens: list[str]
    maps: Tensor
    weights: Tensor = field(default_factory=lambda: torch.empty(0))


class GeneratePredictor(Predictor):
    """A trained generator: prompts -> images, by the EMA weights, with classifier-free guidance."""

    task = "generate"

    @property
    def tokenizer(self):
        return self.trained.artifacts

    @property
    def max_len(self) -> int:
        return int(self.config.get("max_len", 32))

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    def check_prompts(self, prompts: Sequence[str]) -> list[str | None]:
        """One warning (or None) per prompt; raises on a prompt that is not a non-empty text.

        Raises:
            VislangError: A prompt is not a string, or is empty.
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise VislangError("prompts must be a list of texts")
        warnings: list[str | None] = []
        for i, p in enumerate(prompts, 1):
            if not isinstance(p, str):
                raise VislangError(f"prompt {i} is not text (got {type(p).__name__})")
            if not p.strip():
                raise VislangError(f"prompt {i} is empty")
            n = len(self.tokenizer.encode(p))
            warnings.append(f"prompt {i} is {n} tokens long; only its first {self.max_len} are read (the model's "
                            "longest caption)" if n > self.max_len else None)
        return warnings

    def contexts(self, prompts: Sequence[str]) -> tuple[TextContext, TextContext]:
        """The cross-attention contexts of ``prompts`` and of the empty (unconditional) prompt."""
        return (text_context(self.model, self.tokenizer, prompts, self.max_len),
                text_context(self.model, self.tokenizer, [""], self.max_len))

    @torch.inference_mode()
    def generate_tensor(self, prompts: Sequence[str], *, n: int = 1, guidance: float = 3.0, steps: int = 50,
                        seed: int = 0, sampler: str = "ddim", batch_size: int = 16) -> Tensor:
        """Images ``(len(prompts) * n, 3, S, S)`` in [0, 1] (CPU), prompt-major; see :meth:`generate`."""
        self.check_prompts(prompts)
        _check_options(n, guidance, steps, sampler, len(prompts))
        return sample_images(self.model, self.tokenizer, [p for p in prompts for _ in range(n)], self.max_len,
                             guidance=guidance, steps=steps, seed=seed, sampler=sampler, batch_size=batch_size)

    def noise(self, seed: int) -> Tensor:
        """The starting noise ``(1, 3, S, S)`` of seed ``seed``."""
        return seed_noise(seed, self.image_size)

    def generate(self, prompts: Sequence[str], *, n: int = 1, guidance: float = 3.0, steps: int = 50, seed: int = 0,
                 sampler: str = "ddim", batch_size: int = 16, warn: bool = True) -> list[Generated]:
        """``n`` images per prompt.

        Args:
            prompts: Texts (non-empty; longer than the model's ``max_len`` tokens: truncated, with a warning).
            n: Images per prompt.
            guidance: Classifier-free guidance scale (1: the conditional prediction alone; 0: unconditional).
            steps: Sampler steps.
            seed: Sample ``j`` starts from the noise of ``seed + j``.
            sampler: ``ddim`` or ``dpm`` (DPM-Solver++, good in fewer steps).
            batch_size: Images per model batch (a guided batch runs twice that through the UNet).
            warn: Print the prompts' warnings on stderr (they are also in each result's ``warning``).

        Raises:
            VislangError: A bad prompt or option, or more than :data:`MAX_SAMPLES` images asked for.
        """
        warnings = self.check_prompts(prompts)
        if warn:
            for w in dict.fromkeys(w for w in warnings if w):
                print(f"warning: {w}", file=sys.stderr)
        images = self.generate_tensor(prompts, n=n, guidance=guidance, steps=steps, seed=seed, sampler=sampler,
                                      batch_size=batch_size)
        return [Generated(prompts[j // n], to_pil(images[j]), seed + j, warnings[j // n]) for j in range(len(images))]

    @torch.inference_mode()
    def explain(self, prompt: str, *, guidance: float = 3.0, steps: int = 50, seed: int = 0,
                sampler: str = "ddim") -> GenerationExplanation:
        """Generate one image for ``prompt`` while recording the UNet's cross-attention: per token, where in
        the image it was attended to, averaged over heads, layers and steps."""
        self.check_prompts([prompt])
        _check_options(1, guidance, steps, sampler, 1)
        context, uncond = self.contexts([prompt])
        unet = self.model.ema_unet
        recorder, restore = record_cross_attention(unet)
        try:
            x = self.model.sample(context, uncond, guidance=guidance, steps=steps, sampler=sampler,
                                  noise=self.noise(seed).to(self.device))
        finally:
            restore()
        length = int(context.mask[0].sum())
        side = max(int(m.shape[2] ** 0.5) for m in recorder.maps)
        total = torch.zeros(length, side, side)
        for probs in recorder.maps:                                   # (B, heads, Q, L): row 0 is the prompt
            q = probs.shape[2]
            h = int(q ** 0.5)
            m = probs[0].float().mean(0)[:, :length].T.reshape(length, 1, h, h).cpu()  # (T, 1, h, h)
            total += torch.nn.functional.interpolate(m, size=(side, side), mode="nearest")[:, 0] * (side * side) / q
        weights = total.sum((1, 2))
        maps = total / total.sum((1, 2), keepdim=True).clamp(min=1e-12)
        ids = self.tokenizer.encode(prompt, max_len=self.max_len)
        tokens = token_names(self.tokenizer, ids)
        return GenerationExplanation(prompt, to_pil(to_unit_range(x[0]).float().cpu()), tokens, maps,
                                     weights / weights.sum().clamp(min=1e-12))


def _check_options(n: int, guidance: float, steps: int, sampler: str, prompts: int) -> None:
    if n < 1 or steps < 1:
        raise VislangError(f"n and steps must be >= 1 (got n={n}, steps={steps})")
    if not 0.0 <= guidance <= 50.0:
        raise VislangError(f"guidance must be in [0, 50], not {guidance}")
    if sampler not in SAMPLERS:
        raise VislangError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if prompts * n > MAX_SAMPLES:
        raise VislangError(f"{prompts * n} images asked for; at most {MAX_SAMPLES} per call")


def token_names(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """A name for each token of a prompt's ``ids``: its text, ``[start]`` / ``[end]`` for the special tokens
    around the prompt, ``[unknown]`` for a word the model does not know (``[ID]`` for any other token without
    text)."""
    names = []
    for k, i in enumerate(ids):
        if k == 0 and i == tokenizer.bos_id:
            names.append("[start]")
        elif k == len(ids) - 1 and i == tokenizer.eos_id:
            names.append("[end]")
        elif i == getattr(tokenizer, "unk_id", None):
            names.append("[unknown]")
        else:
            names.append(tokenizer.decode([i]).strip() or f"[{i}]")
    return names


