"""Optimiser parameter groups (no weight decay on biases and norms, a separate encoder learning rate) and
the linear warm-up + cosine decay schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vislang.errors import VislangError

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),  # torch >= 2.4
)
"""Modules whose parameters never get weight decay."""

ENCODER_ATTR = "image_encoder"
"""Attribute of a model holding its image encoder (the sub-module with its own lr, or frozen)."""

TEXT_ENCODER_ATTR = "text_encoder"
"""Attribute of a model holding its text encoder (a pre-trained text tower fine-tuned at its own lr)."""


@dataclass
class ParamGroupSummary:
    """What :func:`param_groups` put where, for logging.

    Attributes:
        decay: Number of parameter tensors with weight decay.
        no_decay: Number without (biases, norms, other 1-D parameters).
        frozen: Number frozen (``requires_grad`` False).
        trainable_params: Total trainable scalars.
    """

    decay: int = 0
    no_decay: int = 0
    frozen: int = 0
    trainable_params: int = 0


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that should not be decayed: biases, every parameter of a normalisation layer, and
    any parameter with fewer than two dimensions (scales, gains, learned temperatures)."""
    names = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, NORM_TYPES) or p.ndim < 2 or p_name.endswith("bias"):
                names.add(full)
    return names


def param_groups(model: nn.Module, *, lr: float, weight_decay: float, encoder_lr: float | None = None,
                 freeze_encoder: bool = False, encoder_attr: str = ENCODER_ATTR,
                 text_encoder_lr: float | None = None, text_encoder_attr: str = TEXT_ENCODER_ATTR,
                 ) -> tuple[list[dict], ParamGroupSummary]:
    """Split a model's parameters into AdamW groups.

    Args:
        model: The model.
        lr: Learning rate of every group but the encoder's.
        weight_decay: Decoupled weight decay of the decayed groups.
        encoder_lr: Learning rate of ``model.<encoder_attr>`` (None: ``lr``).
        freeze_encoder: Freeze the encoder (no gradients, BatchNorm statistics fixed) and leave it out of the
            optimiser.
        encoder_attr: Attribute naming the encoder sub-module.
        text_encoder_lr: Learning rate of ``model.<text_encoder_attr>`` (None: ``lr``), e.g. a pre-trained
            text tower fine-tuned gently.
        text_encoder_attr: Attribute naming the text encoder sub-module.

    Returns:
        The non-empty groups (each with ``params``, ``lr``, ``weight_decay`` and a ``name``) and a summary.

    Raises:
        VislangError: ``encoder_lr``, ``freeze_encoder`` or ``text_encoder_lr`` is set but the model has no such
            sub-module.
    """
    encoder = getattr(model, encoder_attr, None)
    if (encoder_lr is not None or freeze_encoder) and not isinstance(encoder, nn.Module):
        raise VislangError(f"{type(model).__name__} has no '{encoder_attr}' sub-module, so encoder_lr and "
                           "freeze_encoder cannot be used with it")
    encoder_ids = {id(p) for p in encoder.parameters()} if isinstance(encoder, nn.Module) else set()
    text_encoder = getattr(model, text_encoder_attr, None)
    if text_encoder_lr is not None and not isinstance(text_encoder, nn.Module):
        raise VislangError(f"{type(model).__name__} has no '{text_encoder_attr}' sub-module, so text_encoder_lr "
                           "cannot be used with it")
    text_ids = {id(p) for p in text_encoder.parameters()} if text_encoder_lr is not None else set()
    if freeze_encoder:
        from vislang.models.encoders import set_trainable

        set_trainable(encoder, False)  # no gradients, and normalisation statistics stay fixed
    skip = no_decay_names(model)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    summary = ParamGroupSummary()
    for name, p in model.named_parameters():  # shared parameters are listed once
        if not p.requires_grad:
            summary.frozen += 1
            continue
        if encoder_lr is not None and id(p) in encoder_ids:
            part = "encoder"
        elif id(p) in text_ids:
            part = "text_encoder"
        else:
            part = "model"
        decay = name not in skip and weight_decay > 0
        buckets.setdefault((part, decay), []).append(p)
        summary.decay += decay
        summary.no_decay += not decay
        summary.trainable_params += p.numel()
    groups = []
    part_lr = {"model": lr, "encoder": encoder_lr, "text_encoder": text_encoder_lr}
    for (part, decay), params in buckets.items():
        group_lr = part_lr[part]
        groups.append({"params": params, "lr": group_lr, "weight_decay": weight_decay if decay else 0.0,
                       "name": f"{part}{'' if decay else '_no_decay'}"})
    if not groups:
        raise VislangError(f"{type(model).__name__} has no trainable parameters")
    return groups, summary


def build_optimizer(groups: list[dict], *, lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over parameter groups from :func:`param_groups`."""
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


@dataclass
class WarmupCosine:
    """Learning-rate factor per optimiser step: linear warm-up from ``1/warmup`` to 1 over ``warmup``
    steps, then cosine decay to ``min_ratio`` at ``total`` (and ``min_ratio`` after it).

    A class rather than a closure, so :class:`torch.optim.lr_scheduler.LambdaLR` saves it with its state.
    """

    warmup: int
    total: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(total: int, warmup_steps: int, warmup_ratio: float) -> int:
    """Warm-up length: ``max(warmup_steps, round(warmup_ratio * total))``, at most ``total``."""
    return min(total, max(warmup_steps, round(warmup_ratio * total)))


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: int,
                    min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine :class:`~torch.optim.lr_scheduler.LambdaLR`, stepped once per optimiser step."""
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise VislangError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total_steps, min_lr_ratio))
