"""BatchNorm whose batch statistics span every process of a distributed run, so that N ranks of B samples
normalise exactly like one process of N·B (the point of ``SyncBatchNorm``). PyTorch's own
:class:`torch.nn.SyncBatchNorm` runs on GPUs only; :class:`GlobalBatchNorm` runs on any device (two autograd
all-reduces per layer: the mean, then the centred sum of squares), and :func:`sync_batchnorm` picks one of the
two for a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from vislang.utils.distributed import all_reduce_with_grad

_excluded = False  # inside statistics_excluded(): this rank's rows do not count


@contextmanager
def statistics_excluded() -> Iterator[None]:
    """Inside the block, this rank's :class:`GlobalBatchNorm` layers add nothing to the global batch statistics
    (they still take part in the all-reduces and normalise their rows with the others' statistics): a rank
    that steps on a filler sample of weight 0 then leaves the statistics exactly those of the real samples."""
    global _excluded
    before, _excluded = _excluded, True
    try:
        yield
    finally:
        _excluded = before


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the union of all ranks' batches (any number of dimensions, any device).

    In training with more than one rank the mean and the biased variance come from all ranks
    (an autograd all-reduce, whose backward sums the gradients of every rank that used the
    statistics); the running statistics take the unbiased variance over the global count, as BatchNorm does
    on one batch. In evaluation, or in one process, it is plain :func:`~torch.nn.functional.batch_norm`.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (B, C, ...) input, got {tuple(input.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not (self.training and _world() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        keep = 0.0 if _excluded else 1.0
        local = torch.tensor([keep * (x.numel() // c)], dtype=x.dtype, device=x.device)
        sums = all_reduce_with_grad(torch.cat([x.sum(dims) * keep, local]))     # (C + 1,)
        count = sums[c].detach()
        mean = sums[:c] / count                                                 # (C,)
        centred = x - mean.view(shape)
        var = all_reduce_with_grad(centred.pow(2).sum(dims) * keep) / count     # (C,) biased
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                n = float(count)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y


def _swap(module: nn.Module, old: type | tuple[type, ...], make) -> nn.Module:
    """Replace every ``old`` module under ``module`` (in place) by ``make(child)``, state and flags kept."""
    for name, child in list(module.named_children()):
        if isinstance(child, old):
            new = make(child)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            if child.affine:
                new.weight.requires_grad_(child.weight.requires_grad)
                new.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, new)
        else:
            _swap(child, old, make)
    return module


def _args(bn: _BatchNorm) -> dict:
    device = bn.running_mean.device if bn.running_mean is not None else None
    return dict(num_features=bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                track_running_stats=bn.track_running_stats, device=device)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` (in place, weights and statistics kept) by one that synchronises
    its batch statistics across ranks: :class:`torch.nn.SyncBatchNorm` on CUDA, :class:`GlobalBatchNorm`
    elsewhere. The state dict keys stay those of BatchNorm, so saved folders load as before."""
    synced = (GlobalBatchNorm, nn.SyncBatchNorm)
    cls = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm

    def make(bn: _BatchNorm) -> nn.Module:
        new = cls(**_args(bn))
        new.plain_type = type(bn)  # what unsync_batchnorm puts back
        return new

    plain = tuple(c for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
    return _swap(module, plain, lambda bn: bn if isinstance(bn, synced) else make(bn))


def unsync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm` in place: the plain BatchNorm layers back, same weights and statistics."""
    return _swap(module, (GlobalBatchNorm, nn.SyncBatchNorm),
                 lambda bn: getattr(bn, "plain_type", nn.BatchNorm2d)(**_args(bn)))
