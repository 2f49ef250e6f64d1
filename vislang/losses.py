"""Losses as modules: features in, a dict with ``loss`` (and its parts, for logging) out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CaptionLoss(nn.Module):
    """Token cross-entropy with optional label smoothing, plus the doubly stochastic attention
    regulariser of Show, Attend and Tell, ``lambda * (1 - sum_t alpha_ti)^2``, which pushes the model to look
    at every part of the image over the caption. The paper sums it over the N grid cells; here it is
    averaged over cells (and images) so one lambda suits any grid size and caption length.

    Args:
        pad_id: Target id ignored by the loss.
        label_smoothing: Label smoothing of the cross-entropy.
        attention_reg: lambda (0 disables).
    """

    def __init__(self, pad_id: int = 0, label_smoothing: float = 0.0, attention_reg: float = 1.0):
        super().__init__()
        self.pad_id, self.label_smoothing, self.attention_reg = pad_id, label_smoothing, attention_reg

    def forward(self, logits: Tensor, targets: Tensor, attention: Tensor | None = None) -> dict[str, Tensor]:
        """Args:
            logits: (B, T, V).
            targets: (B, T), ``pad_id`` where there is no token.
            attention: (B, T, N) attention weights, or None.
        """
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                             ignore_index=self.pad_id, label_smoothing=self.label_smoothing)
        out = {"loss": ce, "ce": ce.detach()}
        if attention is not None and self.attention_reg > 0:
            mask = (targets != self.pad_id).unsqueeze(-1).to(attention.dtype)  # (B, T, 1)
            coverage = (attention * mask).sum(dim=1)  # (B, N)
            reg = self.attention_reg * ((1.0 - coverage) ** 2).mean()
            out["loss"] = ce + reg
            out["attention_reg"] = reg.detach()
        return out


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over a batch of matching image/text pairs (CLIP, Radford et al. 2021).

    With normalised embeddings ``x_i`` (images) and ``y_j`` (texts) and the similarity scale ``s``, the logits
    are ``s * x_i . y_j``; image ``i``'s text is ``j = i``. ``i2t`` is the cross-entropy of each image over
    the batch's texts, ``t2i`` of each text over the images, and ``loss`` their mean.

    Pairs that are not the diagonal but share a group id (the same concept drawn in another style, the same
    caption twice) are not negatives: they are removed from both softmaxes (their logits set to -inf), so
    the model is never pushed apart from a correct match. With all-distinct ids this is plain InfoNCE.
    """

    def forward(self, image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor | float,
                group_ids: Tensor | None = None) -> dict[str, Tensor]:
        """Args:
            image_embeds: (B, E), L2-normalised.
            text_embeds: (B, E), L2-normalised; row ``i`` describes image ``i``.
            logit_scale: The similarity scale ``s`` (already exponentiated), a scalar.
            group_ids: (B,) integer ids; equal ids off the diagonal are masked out. None: all distinct.

        Returns:
            ``loss``, ``i2t``, ``t2i``, ``logit_scale`` (detached), ``accuracy`` (mean of the in-batch top-1
            accuracies of both directions) and ``masked`` (fraction of the off-diagonal pairs masked out).
        """
        logits, target, masked_frac = batch_logits(image_embeds, text_embeds, logit_scale, group_ids)
        i2t = F.cross_entropy(logits, target)
        t2i = F.cross_entropy(logits.T, target)
        with torch.no_grad():
            acc = ((logits.argmax(1) == target).float().mean() + (logits.argmax(0) == target).float().mean()) / 2
        return {"loss": (i2t + t2i) / 2, "i2t": i2t.detach(), "t2i": t2i.detach(), "logit_scale": _detached(logit_scale),
                "accuracy": acc, "masked": masked_frac.detach()}


def batch_logits(image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor | float,
                 group_ids: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The in-batch logits ``(B, B)`` (image x text) with same-group pairs off the diagonal set to -inf, the
    targets ``arange(B)`` and the fraction of off-diagonal pairs masked out (see :class:`ContrastiveLoss`)."""
    b = image_embeds.shape[0]
    logits = logit_scale * image_embeds.float() @ text_embeds.float().T            # (B, B) image x text
    target = torch.arange(b, device=logits.device)                                # (B,)
    masked_frac = logits.new_zeros(())
    if group_ids is not None:
        if group_ids.shape != (b,):
            raise ValueError(f"group_ids must have shape ({b},), got {tuple(group_ids.shape)}")
        same = group_ids[:, None] == group_ids[None, :]                             # (B, B)
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
        masked_frac = same.float().sum() / max(1, b * (b - 1))
    return logits, target, masked_frac


def _detached(logit_scale: Tensor | float) -> Tensor:
    return logit_scale.detach() if isinstance(logit_scale, Tensor) else torch.tensor(float(logit_scale))


class TextBankContrastiveLoss(nn.Module):
    """:class:`ContrastiveLoss` whose image->text half ranks each image's caption against a whole bank of
    texts (every distinct training caption) instead of the batch's: a softmax over all concepts, as a
    classifier whose class weights are text embeddings. Rare hard negatives (the other skin tones of an
    emoji, which a random batch almost never holds) are then in every step. The text->image half stays the
    in-batch one. Bank texts of the image's own group are masked out (``bank_masked``), like same-group
    pairs in the batch.
    """

    def forward(self, image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor | float,
                group_ids: Tensor | None, bank_embeds: Tensor, bank_targets: Tensor,
                bank_masked: Tensor) -> dict[str, Tensor]:
        """Args:
            image_embeds: (B, E), L2-normalised.
            text_embeds: (B, E), L2-normalised; row ``i`` describes image ``i``.
            logit_scale: The similarity scale ``s`` (already exponentiated), a scalar.
            group_ids: (B,) integer ids for the in-batch half (see :class:`ContrastiveLoss`), or None.
            bank_embeds: (N, E), L2-normalised bank texts.
            bank_targets: (B,) index in the bank of each image's caption.
            bank_masked: (B, N) True for bank texts that are not negatives of the image (its group's other
                captions); never True at ``bank_targets``.

        Returns:
            ``loss`` (mean of the bank ``i2t`` and the in-batch ``t2i``), ``i2t``, ``t2i``, ``logit_scale``,
            ``accuracy`` (top-1 of each image over the whole bank) and ``masked`` (of the in-batch half).
        """
        batch, target, masked_frac = batch_logits(image_embeds, text_embeds, logit_scale, group_ids)
        t2i = F.cross_entropy(batch.T, target)
        logits = logit_scale * image_embeds.float() @ bank_embeds.float().T        # (B, N) image x bank text
        logits = logits.masked_fill(bank_masked, float("-inf"))
        i2t = F.cross_entropy(logits, bank_targets)
        with torch.no_grad():
            acc = (logits.argmax(1) == bank_targets).float().mean()
        return {"loss": (i2t + t2i) / 2, "i2t": i2t.detach(), "t2i": t2i.detach(), "logit_scale": _detached(logit_scale),
                "accuracy": acc, "masked": masked_frac.detach()}


__all__ = ["CaptionLoss", "ContrastiveLoss", "TextBankContrastiveLoss", "batch_logits"]


class VQALoss(nn.Module):
    """Binary cross-entropy of every answer against its soft VQA target score, as in D. Teney et al. 2018
    ("Tips and Tricks for Visual Question Answering") and Anderson et al. 2018: the answers are not mutually
    exclusive (several humans, several acceptable answers), so each gets a sigmoid; the mean over answers is
    multiplied by their number (a sum per question, averaged over the batch).

    Also reports ``accuracy``: the soft score of the top answer (the VQA accuracy of the batch).
    """

    def forward(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Args:
            logits: (B, A) answer scores.
            targets: (B, A) soft targets in [0, 1] (``min(1, #humans giving the answer / 3)``).
        """
        if logits.shape != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float()) * logits.shape[1]
        top = logits.detach().argmax(dim=1, keepdim=True)                        # (B, 1)
        return {"loss": loss, "accuracy": targets.gather(1, top).mean().detach()}


class ClassificationLoss(nn.Module):
    """Cross-entropy over class labels with optional label smoothing; reports the batch ``accuracy`` too."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Args:
            logits: (B, C).
            labels: (B,) class indices.
        """
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        acc = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "accuracy": acc}
