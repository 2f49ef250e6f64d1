"""Several processes training one model (``torchrun``): who this process is, the process group, and the few
collectives the loop and the tasks need.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each process;
:func:`init_distributed` joins the group with the backend the device wants (NCCL on CUDA, gloo on CPU) and a
*short* timeout: a rank that dies or stalls ends every other rank with :class:`DistributedError` within the
timeout instead of a hang. ``torchrun --nproc-per-node 1`` is a process group of one (DDP with one rank).
Without those variables nothing here does anything and every collective is the identity, so the
single-process path stays exactly what it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vislang.errors import VislangError, first_line

DEFAULT_TIMEOUT_S = 600.0
"""Seconds a collective waits for the other ranks before every rank stops with an error."""


class DistributedError(VislangError):
    """A collective failed: another rank died, stalled past the timeout, or could not be reached."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the processes of one run.

    Attributes:
        rank: Global rank (0 writes checkpoints, logs and the progress bar).
        world_size: Number of processes.
        local_rank: Rank on this node (its GPU index on CUDA).
        enabled: Started by torchrun (a process group, even of one): training uses DDP.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


def env_from(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The ranks torchrun set in ``environ`` (default ``os.environ``); a single process when they are absent."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", None)):
        raw = environ.get(name)
        if raw is None:
            values[name] = default
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise VislangError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    local = rank if values["LOCAL_RANK"] is None else values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise VislangError(f"bad process ranks: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    launched = world > 1 or ("WORLD_SIZE" in environ and bool(environ.get("MASTER_ADDR")))  # torchrun, any N
    return DistEnv(rank, world, local, launched)


def current() -> DistEnv:
    """This process's ranks: those of the joined process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), env_from().local_rank, True)
    return DistEnv()


def is_main() -> bool:
    """True on rank 0 and in a single process: the process that writes and reports."""
    return current().is_main


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistEnv:
    """Join the process group torchrun described in the environment (once per process).

    Args:
        device: The training device (``cuda`` is narrowed to ``cuda:LOCAL_RANK`` by :func:`rank_device`).
        timeout_s: Seconds any collective (and the rendezvous) waits for the other ranks.

    Returns:
        This process's ranks (a single process when the environment names none).

    Raises:
        DistributedError: The other ranks could not be reached within the timeout.
    """
    env = env_from()
    if not env.enabled or (dist.is_available() and dist.is_initialized()):
        return current() if env.enabled else DistEnv()
    if not dist.is_available():
        raise VislangError("this PyTorch build has no torch.distributed; train with one process")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise VislangError(f"WORLD_SIZE={env.world_size} but {' and '.join(missing)} not set: start the ranks "
                           "with torchrun")
    if timeout_s <= 0:
        raise VislangError(f"the process-group timeout must be > 0 seconds, not {timeout_s}")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {env.rank}: could not join the {env.world_size} ranks at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:g} s "
                               f"({first_line(e)})") from None
    return env


def rank_device(device: torch.device, env: DistEnv) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun, else ``device``."""
    if env.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", env.local_rank)
    return device


def shutdown() -> None:
    """Leave the process group (if joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def collective_errors(what: str) -> Iterator[None]:
    """Turn a failed collective inside the block into one :class:`DistributedError` line naming the rank."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as e:  # DistBackendError, gloo's "Connection closed by peer", timeouts
        if not (dist.is_available() and dist.is_initialized()):
            raise
        env = current()
        raise DistributedError(f"rank {env.rank} of {env.world_size}: {what} failed: another rank died, stalled "
                               f"past the timeout or cannot be reached ({first_line(e)})") from None


# ------------------------------------------------------------------------------------------- collectives


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if current().enabled:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    env = current()
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_bounds(n: int, env: DistEnv | None = None) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous part of ``n`` items (all of them in a single process)."""
    env = env or current()
    r, w = (env.rank, env.world_size) if env.enabled else (0, 1)
    return n * r // w, n * (r + 1) // w


def map_sharded(fn: Callable[[list], Any], items: Sequence[Any], join: Callable[[list], Any] | None = None) -> Any:
    """``fn(items)``, computed in parts: each rank applies ``fn`` to its contiguous part of ``items`` and every
    rank gets the parts joined in item order (``join``: list concatenation by default; e.g. ``torch.cat`` for
    tensors, joined on the CPU). A rank with no items does not call ``fn``. In a single process: ``fn(items)``.

    ``fn`` must treat items independently (an evaluation model in ``eval()`` mode), so the parts joined equal
    the whole.
    """
    items = list(items)
    if not current().enabled:
        return fn(items)
    start, stop = shard_bounds(len(items))
    part = fn(items[start:stop]) if stop > start else None
    if isinstance(part, Tensor):
        part = part.cpu()  # pickled to the other ranks: never as another process's GPU memory
    parts = [p for p in gather_objects(part) if p is not None]
    if join is not None:
        return join(parts)
    return [x for part in parts for x in part]


@contextmanager
def sharded_command(what: str, device: torch.device | str = "cpu",
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[DistEnv]:
    """Run a command's work over torchrun's ranks (a single process without torchrun): join the process
    group, yield this rank, and end every rank with one :class:`DistributedError` line if a collective fails.
    Ranks other than 0 print nothing to stdout: rank 0 alone reports and writes."""
    env = init_distributed(torch.device(device), timeout_s)
    try:
        with contextlib.ExitStack() as stack:
            if not env.is_main:
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            with collective_errors(what):
                yield env
    finally:
        shutdown()


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum of ``values`` over the ranks (a new tensor; no gradient)."""
    if not current().enabled:
        return values.clone()
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; the gradient of each rank's input is the sum of every rank's output gradient
    (every rank used the sum)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class _AllGather(torch.autograd.Function):
    """Every rank's ``(n, ...)`` rows (equal ``n``) stacked in rank order; each rank's rows get the sum of every
    rank's gradient of them."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """Sum of ``x`` over the ranks, differentiable (``x`` itself in a single process)."""
    return _AllReduceSum.apply(x) if current().enabled else x


def gather_with_grad(x: Tensor) -> Tensor:
    """Every rank's ``x`` concatenated along dim 0 in rank order, with gradients flowing back to each rank's
    part (the sum of all ranks' gradients of it, since every rank uses the whole). Ranks may hold different
    numbers of rows (the last batch of an epoch).
    """
    env = current()
    if not env.enabled:
        return x
    sizes = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.zeros_like(sizes) for _ in range(env.world_size)]
    dist.all_gather(counts, sizes)
    counts_list = [int(c) for c in counts]
    longest = max(counts_list)
    if x.shape[0] < longest:  # all-gather wants equal shapes: pad, then cut each rank's rows back out
        x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    rows = _AllGather.apply(x)                                               # (world * longest, ...)
    return torch.cat([rows[r * longest:r * longest + n] for r, n in enumerate(counts_list)])
