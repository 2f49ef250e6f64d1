"""The seeded sampler resumes inside an epoch with the same remaining order and augmentation seeds, and the
loader's stream does not depend on the number of workers over several epochs."""

from __future__ import annotations

import torch
from tinytrain import make_data

from vislang.data.loader import SeededSampler, build_loader


def _sampler(seed: int = 5) -> SeededSampler:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return SeededSampler(20, shuffle=True, generator=gen)


def test_sampler_resumes_mid_pass():
    full = _sampler()
    passes = [list(full) for _ in range(3)]
    assert passes[0] != passes[1] and sorted(i for i, _ in passes[0]) == list(range(20))

    run = _sampler()
    list(run)
    before_second = run.state_dict()
    assert list(run)[:7] == passes[1][:7]  # ... killed after 7 samples of the second pass

    resumed = _sampler(seed=99)  # a fresh process, whatever its seed
    resumed.load_state_dict({**before_second, "start": 7})
    assert list(resumed) == passes[1][7:]
    assert list(resumed) == passes[2]  # and the passes after it are those of the uninterrupted run


def _epochs(loader, n: int) -> list[list[tuple[list[int], float]]]:
    return [[(b["index"].tolist(), round(b["image"].sum().item(), 3)) for b in loader] for _ in range(n)]


def test_loader_stream_is_the_same_with_or_without_workers(data_root):
    samples, _ = make_data(data_root)  # random crops and colour jitter
    single = _epochs(build_loader(samples, 16, shuffle=True, seed=3), 3)
    workers = _epochs(build_loader(samples, 16, shuffle=True, seed=3, workers=2), 3)
    assert single == workers and single[0] != single[1]
