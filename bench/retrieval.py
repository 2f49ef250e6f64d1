"""Retrieval index speed: embedding images, exact search against a torch peer, and IVF / HNSW recall.

(a) Images/s to embed real image files (decode + transform + image tower): with ``--model RUN`` through
    ``vislang.load`` (a ``RetrievalPredictor``); otherwise an *untrained* ``dual_encoder`` from the registry (small CNN
    image tower, 64 px, E=256; the speed does not depend on the weights).
(b) Search latency of 1,000 queries (k=10) over 100k and 1M random L2-normalised vectors (d=256): vislang's
    flat index (``Index.search_vectors``: FAISS ``IndexFlatIP`` plus building the hit lists) against a plain
    torch peer in the same process (``q @ X.T`` then ``topk``, 256 queries at a time so the score block stays
    at 1 GB at 1M), median of several runs.
(c) IVF at several ``nprobe`` and HNSW at several ``ef_search``: recall@10 against the exact results and
    query speed, on uniformly random vectors (no structure: the worst case for both) and on clustered
    vectors (1,000 random unit centres plus Gaussian noise of the same norm, renormalised: closer to real
    embeddings, whose neighbours are much nearer than random pairs).

Everything runs on one thread (``torch.set_num_threads``, ``faiss.omp_set_num_threads``) unless
``--threads`` says otherwise.

    python bench/retrieval.py [--root DATA_ROOT] [--model RUN] [--runs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import faiss
import numpy as np
import torch
from timing import median_time

from vislang.index import Index
from vislang.utils.io import format_table

DIM = 256
K = 10


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def random_vectors(n: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32))


def clustered_vectors(n: int, seed: int, centers: np.ndarray, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, len(centers), n)]
    x += noise / np.sqrt(DIM) * rng.standard_normal((n, DIM), dtype=np.float32)
    return unit(x)


def make_index(x: np.ndarray, kind: str = "flat", **opts) -> tuple[Index, float]:
    """An index of ``x`` with ids and paths, and the seconds ``add`` took (training included)."""
    index = Index.create("bench", DIM, kind, **opts)
    ids = [str(i) for i in range(len(x))]
    paths = [f"img/{i}.png" for i in range(len(x))]
    t0 = time.perf_counter()
    index.add(x, ids, paths)
    return index, time.perf_counter() - t0


def torch_topk(x: torch.Tensor, q: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """The peer: exact top-k by a matmul and ``topk``, ``chunk`` queries at a time."""
    out = []
    for s in range(0, len(q), chunk):
        out.append(torch.topk(q[s:s + chunk] @ x.T, k, dim=1).indices)
    return torch.cat(out)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g[g >= 0]) & set(w)) / len(w) for g, w in zip(got, want)]))


# ----------------------------------------------------------------------------------------------- (a) embed


def bench_embed(args: argparse.Namespace) -> list[list]:
    from vislang.data import load_dataset
    from vislang.data.images import load_image
    from vislang.data.transforms import TransformConfig, build_transform

    ds = load_dataset(args.data, args.split, root=args.root)
    paths = [r.image for r in ds.records[: args.images]]
    rows = []
    if args.model:
        from vislang.inference.retrieval import RetrievalPredictor

        emb = RetrievalPredictor.load(args.model)
        s = median_time(lambda: emb.embed_images(paths, batch_size=64), args.runs)
        rows.append([f"RetrievalPredictor.embed_images ({args.model}), paths -> vectors", len(paths),
                     f"{len(paths) / s:,.1f}"])
        s_pil = median_time(lambda: [load_image(p) for p in paths], args.runs)
        rows.append(["  of which decoding (load_image)", len(paths), f"{len(paths) / s_pil:,.1f}"])
        vecs = emb.embed_images(paths, batch_size=64)
    else:
        from vislang.models.registry import create_model

        model = create_model("dual_encoder").eval()  # untrained: cnn_small image tower, E=256
        tf = build_transform(TransformConfig(image_size=64), train=False)
        batches = [paths[i:i + 64] for i in range(0, len(paths), 64)]

        def prep() -> list[torch.Tensor]:
            return [torch.stack([tf(load_image(p)) for p in b]) for b in batches]

        pixels = prep()

        def encode() -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([model.encode_image(x) for x in pixels])

        def both() -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([model.encode_image(x) for x in prep()])

        s_prep, s_enc, s_all = (median_time(f, args.runs) for f in (prep, encode, both))
        rows += [["untrained dual_encoder 64 px: decode + transform + encode", len(paths),
                  f"{len(paths) / s_all:,.1f}"],
                 ["  decode + transform only (load_image, 64 px)", len(paths), f"{len(paths) / s_prep:,.1f}"],
                 ["  image tower + projection only (batch 64)", len(paths), f"{len(paths) / s_enc:,.1f}"]]
        vecs = encode()
    s_add = median_time(lambda: make_index(vecs.numpy(), "flat"), args.runs)
    rows.append(["  Index.add of those vectors (flat)", len(paths), f"{len(paths) / s_add:,.0f}"])
    return rows


# ---------------------------------------------------------------------------------------------- (b) flat


def bench_flat(args: argparse.Namespace, q: np.ndarray,
               ) -> tuple[list[list], dict[int, tuple[np.ndarray, np.ndarray]]]:
    rows, exact = [], {}
    for n in args.sizes:
        x = random_vectors(n, seed=n)
        index, t_add = make_index(x)
        xt, qt = torch.from_numpy(x), torch.from_numpy(q)
        warm = 1 if n <= 100_000 else 0  # a 1M search takes seconds: no untimed warm-up call
        t_ours = median_time(lambda index=index: index.search_vectors(q, K), args.runs, warm)
        t_raw = median_time(lambda index=index: index.search_arrays(q, K), args.runs, warm)
        t_peer = median_time(lambda xt=xt, qt=qt: torch_topk(xt, qt, K), args.runs, warm)
        got = index.search_arrays(q, K)[1]
        peer = torch_topk(xt, qt, K).numpy()
        agree = recall(got, peer)
        rows.append([f"{n:,}", f"{t_add:.2f}", f"{t_ours * 1e3:.0f}", f"{t_raw * 1e3:.0f}", f"{t_peer * 1e3:.0f}",
                     f"{t_ours / t_peer:.2f}", f"{agree:.4f}"])
        print(f"  flat {n:,}: vislang {t_ours:.3f} s, raw FAISS {t_raw:.3f} s, torch {t_peer:.3f} s", flush=True)
        if n == args.ann_size:
            exact[n] = (x, got)
        del index, xt, x
    return rows, exact


# ---------------------------------------------------------------------------------------------- (c) ANN


def bench_ann(args: argparse.Namespace, q_random: np.ndarray,
              exact_random: tuple[np.ndarray, np.ndarray] | None) -> list[list]:
    n = args.ann_size
    rng = np.random.default_rng(7)
    centers = unit(rng.standard_normal((1000, DIM), dtype=np.float32))
    data = {}
    if exact_random is not None:
        data["random"] = (exact_random[0], q_random, exact_random[1])
    else:
        x = random_vectors(n, seed=n)
        data["random"] = (x, q_random, make_index(x)[0].search_arrays(q_random, K)[1])
    xc = clustered_vectors(n, 1, centers)
    qc = clustered_vectors(len(q_random), 2, centers)
    data["clustered"] = (xc, qc, make_index(xc)[0].search_arrays(qc, K)[1])

    rows = []
    for name, (x, q, want) in data.items():
        flat, _ = make_index(x)
        t_flat = median_time(lambda flat=flat, q=q: flat.search_vectors(q, K), args.runs)
        rows.append([name, "flat (exact)", "", "", f"{t_flat * 1e3:.0f}", f"{len(q) / t_flat:,.0f}", "1.000"])
        ivf, t_build = make_index(x, "ivf", nlist=args.nlist)
        for nprobe in args.nprobe:
            ivf.set_search_options(nprobe=nprobe)
            t = median_time(lambda ivf=ivf, q=q: ivf.search_vectors(q, K), args.runs)
            r = recall(ivf.search_arrays(q, K)[1], want)
            rows.append([name, f"ivf nlist={ivf.options['nlist']}", f"nprobe={nprobe}", f"{t_build:.1f}",
                         f"{t * 1e3:.0f}", f"{len(q) / t:,.0f}", f"{r:.3f}"])
        del ivf
        hnsw, t_build = make_index(x, "hnsw", m=args.hnsw_m, ef_construction=args.ef_construction)
        for ef in args.ef_search:
            hnsw.set_search_options(ef_search=ef)
            t = median_time(lambda hnsw=hnsw, q=q: hnsw.search_vectors(q, K), args.runs)
            r = recall(hnsw.search_arrays(q, K)[1], want)
            rows.append([name, f"hnsw M={args.hnsw_m} efC={args.ef_construction}", f"ef_search={ef}",
                         f"{t_build:.1f}", f"{t * 1e3:.0f}", f"{len(q) / t:,.0f}", f"{r:.3f}"])
        del hnsw
        print(f"  ann on {name} done", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="data root (for the images of part a)")
    ap.add_argument("--data", default="emoji", help="dataset whose images part (a) embeds (default emoji)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--images", type=int, default=1000, help="images embedded in part (a)")
    ap.add_argument("--model", help="trained retrieval run for part (a) (default: an untrained dual_encoder)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--sizes", default="100000,1000000", help="stored vectors for part (b)")
    ap.add_argument("--ann-size", type=int, default=100_000, help="stored vectors for part (c)")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", default="1,4,16,64")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", default="16,64,256")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 'a' or 'a,c'")
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.nprobe = [int(s) for s in args.nprobe.split(",")]
    args.ef_search = [int(s) for s in args.ef_search.split(",")]
    skip = set(args.skip.split(","))
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, faiss {faiss.__version__}, numpy {np.__version__}, "
          f"{args.threads} thread(s); {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    if "a" not in skip:
        rows = bench_embed(args)
        print(f"\n(a) embedding {args.data} [{args.split}] images, median of {args.runs}")
        print(format_table(rows, ("what", "images", "per s")), flush=True)

    q = random_vectors(args.queries, seed=1)
    exact = {}
    if "b" not in skip:
        rows, exact = bench_flat(args, q)
        print(f"\n(b) exact search, {args.queries} queries, k={K}, d={DIM}, median of {args.runs} "
              "(ms for all queries)")
        print(format_table(rows, ("vectors", "add s", "vislang ms", "raw FAISS ms", "torch peer ms",
                                  "vislang/torch", "same top-10")), flush=True)
    if "c" not in skip:
        rows = bench_ann(args, q, exact.get(args.ann_size))
        print(f"\n(c) approximate search over {args.ann_size:,} vectors, {args.queries} queries, recall@{K} "
              f"against exact, median of {args.runs}")
        print(format_table(rows, ("data", "index", "search option", "build s", "ms", "queries/s",
                                  f"recall@{K}")))
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
