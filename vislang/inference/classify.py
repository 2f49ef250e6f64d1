"""Classifying an image with its text: ``vislang.load("runs/cls").classify("icon.png", "happy, smile")``.

```python
clf = vislang.load("runs/cls")
clf.classify("icon.png", "happy, smile")                      # ([(class, p), ...], text as read)
clf.classify_many(["a.png", "b.png"], ["happy", "sad"])        # one batched pass, one text per image
why = clf.explain("icon.png", "happy, smile")                  # ClassExplanation
why.modality_weights, why.attention.shape, why.method          # {"image": .7, "text": .3}, (h, w), ...
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vislang.errors import VislangError
from vislang.inference.base import ImageInput
from vislang.inference.image_text import ImageTextPredictor
from vislang.tasks.classify import ClassSpace
from vislang.tasks.image_text import blank, run_fusion

Ranked = list[tuple[str, float]]


@dataclass
class ClassExplanation:
    """Why a classifier gives a class to an image and its text (:meth:`ClassifyPredictor.explain`).

    Attributes:
        label: The class explained.
        probability: Its probability.
        modality_weights: ``{"image": w, "text": 1 - w}``: how much each modality carried the decision.
        attention: ``(h, w)`` where in the image it looked (non-negative, sums to 1).
        grid_hw: ``(h, w)`` of the image encoder's grid.
        method: ``"weights=<how>, map=<how>"``: weights ``gates`` (the fusion's own modality weights, e.g.
            ``late-gating``) or ``blanking`` (the drop of the class's log-probability when that modality is
            blanked as in training, clamped at 0, normalised; equal when neither drops); map ``attention``
            (the fusion's attention over the image regions) or ``occlusion`` (the drop of the class's
            probability when each grid cell's patch of the image is blanked, clamped at 0, normalised; uniform
            when none drops).
        text: The text as the model read it (class-name words removed).
    """

    label: str
    probability: float
    modality_weights: dict[str, float]
    attention: Tensor
    grid_hw: tuple[int, int]
    method: str
    text: str = ""


class ClassifyPredictor(ImageTextPredictor):
    """A trained image + text classifier with its tokenizer, classes and image preprocessing."""

    task = "classify"

    @property
    def space(self) -> ClassSpace:
        """The classes and how texts are made (class-name words removed)."""
        return self.labels

    def classify(self, image: ImageInput, text: str = "", k: int = 5) -> tuple[Ranked, str]:
        """The ``k`` most probable classes ``[(class, probability)]`` of an image (a path or a PIL image) and
        text, and the text as the model read it (class-name words removed)."""
        return self.classify_many([image], [text], k)[0]

    @torch.inference_mode()
    def classify_many(self, images: Sequence[ImageInput], texts: Sequence[str], k: int = 5
                      ) -> list[tuple[Ranked, str]]:
        """:meth:`classify` of each image with its text, in one batched pass.

        Raises:
            VislangError: Not one text per image.
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        if isinstance(texts, str) or len(texts) != len(images):
            raise VislangError(f"classify_many takes one text per image: {len(images)} images, "
                               f"{'one string' if isinstance(texts, str) else len(texts)} texts")
        if not images:
            return []
        x = self.images_tensor(images)                                                # (B, 3, S, S)
        seen = [self.space.text(t) for t in texts]
        probs = self.run_texts(x, seen).logits.float().softmax(-1).cpu()               # (B, C)
        p, idx = probs.topk(min(k, probs.shape[1]), dim=-1)                            # (B, k)
        return [([(self.space.classes[i], float(v)) for v, i in zip(pr, ir)], s)
                for pr, ir, s in zip(p.tolist(), idx.tolist(), seen)]

    @torch.inference_mode()
    def explain(self, image: ImageInput, text: str = "", label: str | None = None,
                batch_size: int = 64) -> ClassExplanation:
        """How much the image and the text each carried a class, and where in the image (see
        :class:`ClassExplanation` for the methods: the fusion's own gates and attention when it has them,
        else blanking each modality and occluding each grid cell's patch).

        Args:
            image: A path, a PIL image or a preprocessed ``(3, S, S)`` tensor.
            text: The text beside it (class-name words are removed, as in training).
            label: The class to explain (default: the most probable).
            batch_size: Occluded images run at once (bounds the memory of the occlusion map).

        Raises:
            VislangError: ``label`` is not one of the classes.
        """
        if label is not None and label not in self.space.classes:
            raise VislangError(f"{label!r} is not a class of this model ({', '.join(self.space.classes)})")
        x = self.images_tensor([image])                                               # (1, 3, S, S)
        seen = self.space.text(text)
        tokens, lengths = self.encode_texts([seen])                                   # (1, L), (1,)
        out = run_fusion(self.model, x, tokens, lengths)
        logp = out.logits.float().log_softmax(-1)[0].cpu()                            # (C,)
        c = int(logp.argmax()) if label is None else self.space.classes.index(label)
        prob = float(logp[c].exp())
        if out.modality_weights is not None:
            weights, how = out.modality_weights[0].float().cpu(), "gates"
            names = self.model.modalities
        else:
            inputs = blank(self.tokenizer, x.expand(2, -1, -1, -1), tokens.repeat(2, 1), lengths.repeat(2),
                           blank_image=torch.tensor([True, False], device=x.device),
                           blank_text=torch.tensor([False, True]))
            blanked = run_fusion(self.model, *inputs).logits.float().log_softmax(-1)[:, c].cpu()  # (2,)
            weights, how, names = (logp[c] - blanked).clamp_min(0), "blanking", ["image", "text"]
        total = float(weights.sum())
        shares = weights / total if total > 0 else torch.full_like(weights, 1 / len(weights))
        h, w = out.grid_hw
        if out.attention is not None:
            heat, where = out.attention[0].float().cpu().view(h, w), "attention"
        else:
            heat, where = self._occlusion(x, tokens, lengths, c, prob, (h, w), batch_size), "occlusion"
        heat = heat.clamp_min(0)
        heat = heat / heat.sum() if float(heat.sum()) > 0 else torch.full_like(heat, 1 / heat.numel())
        return ClassExplanation(self.space.classes[c], prob, {n: float(v) for n, v in zip(names, shares)}, heat,
                                (h, w), f"weights={how}, map={where}", seen)

    def _occlusion(self, x: Tensor, tokens: Tensor, lengths: Tensor, c: int, prob: float,
                   grid_hw: tuple[int, int], batch_size: int) -> Tensor:
        """``(h, w)`` drop of class ``c``'s probability ``prob`` when each grid cell's patch of ``x``
        ``(1, 3, S, S)`` is blanked (zeros: the blank image of training), ``batch_size`` images at a time."""
        h, w = grid_hw
        side_h, side_w = x.shape[-2:]
        ys = [round(i * side_h / h) for i in range(h + 1)]
        xs = [round(j * side_w / w) for j in range(w + 1)]
        cells = [(i, j) for i in range(h) for j in range(w)]
        drops = []
        for start in range(0, len(cells), max(1, batch_size)):
            part = cells[start:start + max(1, batch_size)]
            xb = x.repeat(len(part), 1, 1, 1)                                         # (b, 3, S, S)
            for n, (i, j) in enumerate(part):
                xb[n, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 0.0
            logits = run_fusion(self.model, xb, tokens.expand(len(part), -1), lengths.expand(len(part))).logits
            drops.append(prob - logits.float().softmax(-1)[:, c].cpu())               # (b,)
        return torch.cat(drops).view(h, w)
