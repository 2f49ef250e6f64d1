"""The parts of distributed training, each against its single-process meaning: the sharded sampler, the
synchronised BatchNorm and the all-gather with gradients (the last two in 2 real gloo processes)."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vislang.data.loader import SeededSampler
from vislang.layers.sync_norm import GlobalBatchNorm, statistics_excluded, sync_batchnorm, unsync_batchnorm
from vislang.utils import distributed
from vislang.utils.distributed import env_from, gather_with_grad


def _order(world: int, batch: int, n: int = 45, start: int = 0, shuffle: bool = True) -> list[list[tuple]]:
    """Each rank's samples of one epoch."""
    out = []
    for rank in range(world):
        s = SeededSampler(n, shuffle, torch.Generator().manual_seed(3), rank=rank, world_size=world,
                          batch_size=batch)
        s.start = start
        out.append(list(s))
    return out


def test_ranks_take_disjoint_slices_of_the_same_global_batches():
    (single,) = _order(1, 12)
    ranks = _order(3, 4)
    assert sorted(x for r in ranks for x in r) == sorted(single)   # disjoint, each sample once
    for g in range(0, 45, 12):  # global batch g/12 is the same 12 samples (and seeds), rank r the r-th four
        for r in range(3):
            assert ranks[r][g // 3:g // 3 + 4] == single[g + 4 * r:g + 4 * r + 4]
    assert [len(r) for r in ranks] == [16, 16, 13]  # the last global batch (9) is 4 + 4 + 1
    assert len(SeededSampler(45, True, torch.Generator(), rank=2, world_size=3, batch_size=4)) == 13


def test_resuming_a_sharded_epoch_skips_whole_global_batches():
    full = _order(2, 4)
    later = _order(2, 4, start=16)  # two global batches of 8 done
    assert later == [r[8:] for r in full]


def test_bad_shards_are_refused():
    with pytest.raises(ValueError, match="rank 2 of 2"):
        SeededSampler(10, False, torch.Generator(), rank=2, world_size=2, batch_size=4)


def test_environment_is_read_once_and_checked():
    assert env_from({}) == distributed.DistEnv(0, 1, 0)
    assert env_from({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == distributed.DistEnv(3, 4, 1, True)
    # torchrun --nproc-per-node 1: a group of one (DDP); a stray WORLD_SIZE=1 alone is a single process
    assert env_from({"WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}).enabled
    assert not env_from({"WORLD_SIZE": "1"}).enabled
    with pytest.raises(distributed.VislangError, match="WORLD_SIZE='two' is not an integer"):
        env_from({"WORLD_SIZE": "two"})
    with pytest.raises(distributed.VislangError, match="bad process ranks"):
        env_from({"RANK": "2", "WORLD_SIZE": "2"})


# --------------------------------------------------------------------------- in two real gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, port: int, out: str) -> None:
    mp.start_processes(fn, args=(port, out), nprocs=2, start_method="spawn", join=True)


def _join(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)


def _bn_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 4, 5, 5, generator=g) * 3 + 1, torch.randn(10, 4, 5, 5, generator=g)


def _bn_model() -> nn.Module:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    nn.init.normal_(m[1].weight)
    return m


ROWS = [slice(0, 7), slice(7, 10)]  # uneven halves


def _bn_rank(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    model = sync_batchnorm(_bn_model(), torch.device("cpu"))
    assert isinstance(model[1], GlobalBatchNorm)
    x, w = _bn_inputs()
    xr = x[ROWS[rank]].clone().requires_grad_(True)
    y = model(xr)
    (y * w[ROWS[rank]]).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    for p in grads.values():  # what DDP does: the mean over ranks
        dist.all_reduce(p)
    result = {"y": y.detach(), "x_grad": xr.grad, "grads": {k: g / 2 for k, g in grads.items()},
              "running": {k: v.clone() for k, v in model.state_dict().items() if "running" in k}}
    # a rank stepping on a filler row that stays out of the statistics
    model2 = sync_batchnorm(_bn_model(), torch.device("cpu"))
    if rank == 0:
        result["y_alone"] = model2(x[:7]).detach()
    else:
        with statistics_excluded():
            model2(x[:1])
    result["running_alone"] = model2[1].running_mean.clone()
    plain = unsync_batchnorm(model2)
    result["unsynced"] = type(plain[1]).__name__
    torch.save(result, f"{out}{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on loopback")
def test_global_batchnorm_in_two_processes_equals_batchnorm_on_the_whole_batch(tmp_path):
    out = str(tmp_path / "bn")
    _spawn(_bn_rank, _free_port(), out)
    got = [torch.load(f"{out}{r}.pt") for r in range(2)]
    model = _bn_model()
    x, w = _bn_inputs()
    x = x.clone().requires_grad_(True)
    y = model(x)
    (y * w).sum().backward()
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([g["x_grad"] for g in got]), x.grad, atol=1e-5, rtol=1e-5)
    # DDP's mean of the ranks' gradients is half the whole batch's sum-loss gradient
    for k, p in model.named_parameters():
        torch.testing.assert_close(got[0]["grads"][k] * 2, p.grad, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got[1]["grads"][k], got[0]["grads"][k])
    for k, v in model.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(got[0]["running"][k], v, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(got[1]["running"][k], v, atol=1e-6, rtol=1e-5)
    alone = _bn_model()
    torch.testing.assert_close(got[0]["y_alone"], alone(x.detach()[:7]).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1]["running_alone"], alone[1].running_mean, atol=1e-6, rtol=1e-5)
    assert got[0]["unsynced"] == "BatchNorm2d"


def _gather_rank(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    x = torch.arange(6.0).view(3, 2)[ROWS_G[rank]].clone().requires_grad_(True)
    rows = gather_with_grad(x)                                                    # (3, 2) on both ranks
    (rows * torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])).sum().backward()
    torch.save({"rows": rows.detach(), "grad": x.grad}, f"{out}{rank}.pt")
    dist.destroy_process_group()


ROWS_G = [slice(0, 2), slice(2, 3)]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on loopback")
def test_gather_with_grad_joins_uneven_ranks_and_sums_their_gradients(tmp_path):
    out = str(tmp_path / "g")
    _spawn(_gather_rank, _free_port(), out)
    got = [torch.load(f"{out}{r}.pt") for r in range(2)]
    for g in got:
        assert torch.equal(g["rows"], torch.arange(6.0).view(3, 2))
    # both ranks used every row: each row's gradient is twice its coefficient
    assert torch.equal(got[0]["grad"], 2 * torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(got[1]["grad"], 2 * torch.tensor([[5.0, 6.0]]))


def _map_rank(rank: int, port: int, out: str) -> None:
    _join(rank, port)
    seen: list[list[str]] = []

    def upper(part: list[str]) -> list[str]:
        seen.append(list(part))
        return [x.upper() for x in part]

    got = {"letters": distributed.map_sharded(upper, "abcde"),
           "one": distributed.map_sharded(upper, ["z"]),          # rank 1 alone has an item; rank 0 calls nothing
           "rows": distributed.map_sharded(lambda part: torch.tensor(part).view(-1, 1) * 10, [1, 2, 3], torch.cat),
           "seen": seen}
    torch.save(got, f"{out}{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on loopback")
def test_map_sharded_gives_each_rank_its_contiguous_part_and_every_rank_the_whole(tmp_path):
    out = str(tmp_path / "m")
    _spawn(_map_rank, _free_port(), out)
    got = [torch.load(f"{out}{r}.pt") for r in range(2)]
    for g in got:
        assert g["letters"] == list("ABCDE") and g["one"] == ["Z"]
        assert torch.equal(g["rows"], torch.tensor([[10], [20], [30]]))
    assert got[0]["seen"] == [["a", "b"]]
    assert got[1]["seen"] == [["c", "d", "e"], ["z"]]


def test_single_process_collectives_are_the_identity():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x
    assert distributed.gather_objects("a") == ["a"]
    assert distributed.map_sharded(lambda part: [len(part)], "abc") == [3]  # one call with everything
    assert distributed.broadcast_object({"k": 1}) == {"k": 1}
    assert torch.equal(distributed.all_reduce_sum(x), x)
    assert "MASTER_PORT" not in os.environ or distributed.current().world_size == 1
