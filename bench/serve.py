"""`vislang serve` under concurrent load: micro-batching against batch size 1, latency per endpoint, and a crash test.

Trains (or takes with ``--caption/--vqa/--retrieval RUN``) a captioner (``caption_lstm``), a VQA model (``vqa``,
attention fusion) and a retrieval model (``dual_encoder``) on the built-in shapes data at 32 px, draws
``--images`` pictures (one or two coloured shapes on white, 64 px PNGs) and indexes them with ``vislang index
build``. Times the captioner's batched beam search alone in this process (the ceiling of what batching can
give). Then, for each ``--server-threads`` (the server's ``OMP_NUM_THREADS``) and each server configuration
(``--max-batch 16`` at each ``--max-wait-ms``, and ``--max-batch 1``), starts a real ``vislang serve`` process
on 127.0.0.1 (a free port; default access log, to a file) and, from this process (asyncio + one
``httpx.AsyncClient``; request bodies encoded once, before the clock starts):

1. sends every distinct request once, one at a time (the reference answers: batches of one);
2. caption-only phase: ``--clients`` clients x ``--caption-requests-per-client`` captions, ``--repeats`` times
   (requests/s: the median): the batching / batch-1 ratio;
3. mixed phase: ``--clients`` clients x ``--requests-per-client`` requests, caption / search (text) / ask in
   turn: requests/s, p50 / p99 latency per endpoint, errors, mean batch size (from ``/metrics``), CPU per
   request of the server and of this client, and how many answers under load equal the reference ones.

Crash test: a batching server under the mixed load is killed with SIGKILL, started again on the same port and
models, and the reference requests are sent again: every answer must be identical. The sha256 of every file of
the runs, the index and the pictures is taken before the first server starts and after the last one stops.

Prints a table on stderr and one JSON summary on stdout (``--out FILE`` writes it too); exits 1 when a request
failed, an answer changed across the crash or a file changed.

    python bench/serve.py --root DATA_ROOT [--work DIR] [--caption RUN --vqa RUN --retrieval RUN]
        [--clients 16] [--requests-per-client 100] [--caption-requests-per-client 25] [--repeats 3]
        [--max-wait-ms 5 ...] [--server-threads 1 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw
from timing import median_time

SHAPES = "shapes:n_train=200,n_val=16,n_test=16,size=32"
MODELS = {"caption": "caption_lstm", "vqa": "vqa", "retrieval": "dual_encoder"}
COLORS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 230), "yellow": (240, 220, 30),
          "purple": (130, 40, 160), "orange": (250, 140, 20), "gray": (128, 128, 128)}
SHAPE_NAMES = ("circle", "square", "triangle", "diamond")
QUESTIONS = ["What color is the {shape}?", "What shape is the {color} object?", "How many objects are there?",
             "Are there any {shape}s?", "How many {color} objects are there?", "Are there any {color} objects?"]
ENDPOINTS = ("caption", "search", "ask")


# ------------------------------------------------------------------------------------------------ setup
def vislang(args: list[str], env: dict[str, str]) -> None:
    res = subprocess.run([sys.executable, "-m", "vislang", *args], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"vislang {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")


def train_runs(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, Path]:
    """The three runs: given ones as they are, the others trained once into ``work`` (kept there)."""
    runs = {}
    for task, model in MODELS.items():
        given = getattr(args, task)
        out = Path(given) if given else work / f"{task}_run"
        if not given and not (out / "checkpoints" / "best").is_dir():
            t0 = time.perf_counter()
            vislang(["train", task, "--model", model, "--data", SHAPES, "--root", args.root, "--image-size", "32",
                     "--batch-size", "16", "--max-steps", str(args.train_steps), "--epochs", "10", "--seed", "0",
                     "--out", str(out)], env)
            print(f"trained {task} ({model}, {args.train_steps} steps) in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
        runs[task] = out
    return runs


def draw_pictures(folder: Path, n: int) -> list[tuple[Path, str, str]]:
    """``n`` 64 px PNGs of one or two shapes on white; returns ``(path, colour, shape)`` of each's first shape."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, out = random.Random(0), []
    for i in range(n):
        im = Image.new("RGB", (64, 64), "white")
        d = ImageDraw.Draw(im)
        first = None
        for _ in range(rng.choice((1, 1, 2))):
            color, shape = rng.choice(list(COLORS)), rng.choice(SHAPE_NAMES)
            first = first or (color, shape)
            r, x, y = rng.randint(8, 14), rng.randint(16, 48), rng.randint(16, 48)
            box = (x - r, y - r, x + r, y + r)
            fill = COLORS[color]
            if shape == "circle":
                d.ellipse(box, fill=fill)
            elif shape == "square":
                d.rectangle(box, fill=fill)
            elif shape == "triangle":
                d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
            else:
                d.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
        path = folder / f"pic{i:03d}.png"
        if not path.is_file():
            im.save(path)
        out.append((path, *first))
    return out


def tree_hashes(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths``."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def compute_ceiling(run: Path, pictures: list[tuple[Path, str, str]], threads: int, repeats: int,
                    sizes: tuple[int, ...] = (1, 4, 8, 16)) -> dict[str, Any]:
    """Images/s of the captioner's beam search alone over all the pictures, in this process (no HTTP, no image
    decoding), at each batch size, with the service's default decoding: what batching can give at most
    (median of ``repeats``)."""
    import torch

    from vislang.inference import load
    from vislang.serve.config import DEFAULT_BEAM, DEFAULT_LENGTH_PENALTY

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pred = load(run, device="cpu")
        xs = [pred.preprocess(Image.open(p).convert("RGB")) for p, *_ in pictures]

        def decode(bs: int) -> None:
            with torch.inference_mode():
                for i in range(0, len(xs), bs):
                    for _ in pred.iter_captions(xs[i:i + bs], beam=DEFAULT_BEAM, batch_size=bs,
                                                length_penalty=DEFAULT_LENGTH_PENALTY):
                        pass

        rates = {bs: len(xs) / median_time(lambda bs=bs: decode(bs), repeats) for bs in sizes}
    finally:
        torch.set_num_threads(before)
    return {"images_per_s": {str(bs): round(r, 1) for bs, r in rates.items()},
            "ratio_vs_batch_1": {str(bs): round(r / rates[1], 2) for bs, r in rates.items()}}


# ------------------------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class Req:
    """One distinct request, its body encoded once."""

    key: str
    endpoint: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


def encode(key: str, endpoint: str, data: dict[str, str], image: bytes | None = None) -> Req:
    files = {"image": ("image.png", image, "image/png")} if image is not None else None
    r = httpx.Request("POST", f"http://x/v1/{endpoint}", data=data, files=files)
    body = r.read()
    return Req(key, endpoint, body, (("content-type", r.headers["content-type"]),))


def build_requests(pictures: list[tuple[Path, str, str]]) -> dict[str, list[Req]]:
    """Endpoint -> its distinct requests: a caption per picture, a text search per colour x shape (k 10), a
    question per picture (templates of the shapes questions, about the picture's first shape)."""
    out: dict[str, list[Req]] = {e: [] for e in ENDPOINTS}
    for i, (path, color, shape) in enumerate(pictures):
        data = path.read_bytes()
        out["caption"].append(encode(f"caption/{path.name}", "caption", {}, data))
        q = QUESTIONS[i % len(QUESTIONS)].format(color=color, shape=shape)
        out["ask"].append(encode(f"ask/{path.name}/{q}", "ask", {"question": q}, data))
    for color in COLORS:
        for shape in SHAPE_NAMES:
            text = f"a {color} {shape}"
            out["search"].append(encode(f"search/{text}", "search", {"text": text, "k": "10"}))
    return out


def answer_of(endpoint: str, body: dict[str, Any]) -> list[Any]:
    """What must not change, as ``[words, scores]``: the caption and its score; the hit ids and their scores; the
    answer and the top answers, and their probabilities."""
    if endpoint == "caption":
        return [body["caption"], [body["score"]]]
    if endpoint == "search":
        return [[h["id"] for h in body["hits"]], [h["score"] for h in body["hits"]]]
    return [[body["answer"], [t["answer"] for t in body["top"]]], [body["confidence"], *(t["p"] for t in body["top"])]]


@dataclass
class Result:
    req: Req
    status: int | str          # HTTP status, or the exception's class name
    seconds: float
    answer: Any = None
    error: str = ""


@dataclass
class Load:
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_s: float = 0.0


async def run_load(url: str, plans: list[list[Req]], stop_on_conn_error: bool = False,
                   progress: asyncio.Event | None = None, progress_at: int = 0) -> Load:
    """One client per plan, each sending its requests one after the other; all over one connection pool."""
    load = Load()
    limits = httpx.Limits(max_connections=len(plans), max_keepalive_connections=len(plans))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker(plan: list[Req]) -> None:
            for req in plan:
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/v1/{req.endpoint}", content=req.body, headers=dict(req.headers))
                    res = Result(req, r.status_code, time.perf_counter() - t0)
                    if r.status_code == 200:
                        res.answer = answer_of(req.endpoint, r.json())
                    else:
                        res.error = r.text[:300]
                except httpx.HTTPError as e:
                    res = Result(req, type(e).__name__, time.perf_counter() - t0, error=str(e)[:300])
                load.results.append(res)
                if progress is not None and len(load.results) >= progress_at:
                    progress.set()
                if stop_on_conn_error and not isinstance(res.status, int):
                    return

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(p) for p in plans))
        load.seconds, load.client_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return load


def plans_of(reqs: dict[str, list[Req]], endpoints: tuple[str, ...], clients: int, per_client: int) -> list[list[Req]]:
    """Client ``c``'s ``i``-th request: endpoint ``(c + i) % len(endpoints)``, cycling through its requests."""
    plans = []
    for c in range(clients):
        plan = []
        for i in range(per_client):
            pool = reqs[endpoints[(c + i) % len(endpoints)]]
            plan.append(pool[(c * 7 + i) % len(pool)])
        plans.append(plan)
    return plans


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``xs``, in milliseconds."""
    s = sorted(xs)
    return 1000 * s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def summarize(load: Load, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    ok = [r for r in load.results if r.status == 200]
    errors: dict[str, int] = {}
    for r in load.results:
        if r.status != 200:
            errors[str(r.status)] = errors.get(str(r.status), 0) + 1
    out: dict[str, Any] = {"requests": len(load.results), "errors": sum(errors.values()), "error_kinds": errors,
                           "seconds": round(load.seconds, 2),
                           "requests_per_s": round(len(ok) / load.seconds, 1) if load.seconds else 0.0,
                           "endpoints": {}}
    for e in ENDPOINTS:
        lat = [r.seconds for r in ok if r.req.endpoint == e]
        if lat:
            out["endpoints"][e] = {"n": len(lat), "p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1)}
    if reference is not None:
        out["same_as_sequential"] = sum(reference.get(r.req.key) == r.answer for r in ok)
        out["same_words_or_ids"] = sum((reference.get(r.req.key) or [None])[0] == r.answer[0] for r in ok)
        out["max_score_diff"] = max((_score_diff(reference.get(r.req.key), r.answer) for r in ok), default=0.0)
    n = max(1, len(load.results))
    out["client_cpu_ms_per_request"] = round(1000 * load.client_cpu_s / n, 2)
    first_errors = [f"{r.req.key}: {r.status} {r.error}" for r in load.results if r.status != 200][:3]
    if first_errors:
        out["first_errors"] = first_errors
    return out


def _score_diff(a: Any, b: Any) -> float:
    if not isinstance(a, list) or len(a[1]) != len(b[1]):
        return float("inf")
    return round(max((abs(x - y) for x, y in zip(a[1], b[1])), default=0.0), 6)


# ------------------------------------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``vislang serve`` subprocess on 127.0.0.1."""

    def __init__(self, runs: dict[str, Path], index: Path, max_batch: int, max_wait_ms: float, threads: int,
                 log: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "vislang", "serve", str(runs["caption"]), str(runs["retrieval"]),
                    str(runs["vqa"]), "--index", str(index), "--host", "127.0.0.1", "--port", str(self.port),
                    "--max-batch", str(max_batch), "--max-wait-ms", f"{max_wait_ms:g}"]
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.log_path = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> float:
        """Start it and wait for ``/readyz``; returns the seconds to ready."""
        t0 = time.perf_counter()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"vislang serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                self.stop()
                raise SystemExit(f"vislang serve not ready after {timeout:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server process has used."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def batch_sizes(self) -> dict[str, tuple[float, float]]:
        """``model/op`` -> (sum, count) of the batch-size histogram in ``/metrics``."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        out: dict[str, list[float]] = {}
        for m in re.finditer(r'^vislang_batch_size_(sum|count)\{([^}]*)\} ([0-9.eE+-]+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            slot = out.setdefault(f"{labels.get('model')}/{labels.get('op')}", [0.0, 0.0])
            slot[0 if m.group(1) == "sum" else 1] = float(m.group(3))
        return {k: (v[0], v[1]) for k, v in out.items()}


def mean_batches(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    out = {}
    for k, (s, c) in after.items():
        s0, c0 = before.get(k, (0.0, 0.0))
        if c > c0:
            out[k] = round((s - s0) / (c - c0), 2)
    return out


def sequential(url: str, reqs: dict[str, list[Req]]) -> dict[str, Any]:
    """Every distinct request once, one at a time: key -> answer (or the error status)."""
    load = asyncio.run(run_load(url, [[r for e in ENDPOINTS for r in reqs[e]]]))
    return {r.req.key: r.answer if r.status == 200 else f"error {r.status}: {r.error}" for r in load.results}


# ------------------------------------------------------------------------------------------------ the phases
def phase(server: Server, plans: list[list[Req]], reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """One load on a running server: its summary, the server's CPU per request and its mean batch sizes."""
    b0, c0 = server.batch_sizes(), server.cpu_s()
    load = asyncio.run(run_load(server.url, plans))
    out = summarize(load, reference)
    out["server_cpu_ms_per_request"] = round(1000 * (server.cpu_s() - c0) / max(1, len(load.results)), 2)
    out["mean_batch"] = mean_batches(b0, server.batch_sizes())
    return out


def measure_config(name: str, server: Server, reqs: dict[str, list[Req]], args: argparse.Namespace,
                   reference: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start ``server``, run the phases, stop it: (its figures, its sequential answers)."""
    out: dict[str, Any] = {"name": name, "ready_s": round(server.start(), 2)}
    try:
        answers = sequential(server.url, reqs)
        out["sequential_errors"] = sum(isinstance(a, str) for a in answers.values())
        if reference is not None:
            out["sequential_same_as_reference"] = sum(reference[k] == a for k, a in answers.items())
            out["sequential_requests"] = len(answers)
        # warm-up: a short caption burst at full concurrency (thread pools, allocator)
        asyncio.run(run_load(server.url, plans_of(reqs, ("caption",), args.clients, 2)))
        cap_runs = []
        for _ in range(args.repeats):
            s = phase(server, plans_of(reqs, ("caption",), args.clients, args.caption_requests_per_client))
            cap_runs.append(s)
            print(f"  {name} caption-only: {s['requests_per_s']} req/s, errors {s['errors']}", file=sys.stderr)
        rates = [s["requests_per_s"] for s in cap_runs]
        mid = sorted(range(len(rates)), key=rates.__getitem__)[len(rates) // 2]
        out["caption_only"] = {"requests_per_s_runs": rates, "requests_per_s": statistics.median(rates),
                               "errors": sum(s["errors"] for s in cap_runs), "median_run": cap_runs[mid]}
        if args.requests_per_client > 0:
            mixed = phase(server, plans_of(reqs, ENDPOINTS, args.clients, args.requests_per_client),
                          reference if reference is not None else answers)
            out["mixed"] = mixed
            print(f"  {name} mixed: {mixed['requests_per_s']} req/s, errors {mixed['errors']}", file=sys.stderr)
    finally:
        server.stop()
    out["server_tracebacks"] = server.log().count("Traceback")
    return out, answers


def crash_test(runs: dict[str, Path], index: Path, reqs: dict[str, list[Req]], reference: dict[str, Any],
               args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """Kill -9 a batching server under the mixed load, restart it on the same port and models, compare."""
    server = Server(runs, index, 16, args.max_wait_ms[0], args.server_threads[0], log)
    out: dict[str, Any] = {"ready_s": round(server.start(), 2)}
    before = sequential(server.url, reqs)
    out["before_same_as_reference"] = sum(reference[k] == a for k, a in before.items())

    async def load_then_kill() -> Load:
        started = asyncio.Event()
        task = asyncio.create_task(run_load(server.url, plans_of(reqs, ENDPOINTS, args.clients, 10_000),
                                            stop_on_conn_error=True, progress=started, progress_at=args.kill_after))
        await asyncio.wait_for(started.wait(), 300)
        server.kill9()
        return await asyncio.wait_for(task, 300)

    load = asyncio.run(load_then_kill())
    ok = [r for r in load.results if r.status == 200]
    failed = [r for r in load.results if r.status != 200]
    out["under_load_before_kill"] = {"answered": len(ok), "failed_by_kill": len(failed),
                                     "failures": sorted({str(r.status) for r in failed}),
                                     "same_as_reference": sum(reference[r.req.key] == r.answer for r in ok)}
    out["restart_ready_s"] = round(server.start(), 2)
    try:
        after = sequential(server.url, reqs)
    finally:
        server.stop()
    diff = [k for k in reference if after.get(k) != reference[k]]
    out.update({"requests": len(reference), "same_after_restart": len(reference) - len(diff),
                "changed": diff[:5], "passed": not diff and out["before_same_as_reference"] == len(reference)})
    return out


def ratios(configs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Requests/s of each batching configuration over batch size 1 at the same threads, and over the best batch
    size 1 of any threads (caption-only phase; mixed phase)."""
    out: dict[str, dict[str, float]] = {}
    for phase_name in ("caption_only", "mixed"):
        def rate(c: dict[str, Any], p: str = phase_name) -> float:
            return c[p]["requests_per_s"] if p in c else float("nan")
        ones = {c["threads"]: rate(c) for c in configs if c["max_batch"] == 1}
        best = max(ones.values())
        for c in configs:
            if c["max_batch"] > 1 and phase_name in c:
                out.setdefault(c["name"], {})[f"{phase_name}_same_threads"] = round(rate(c) / ones[c["threads"]], 2)
                out[c["name"]][f"{phase_name}_vs_best_batch_1"] = round(rate(c) / best, 2)
    return out


def table(summary: dict[str, Any]) -> str:
    from vislang.utils.io import format_table

    rows = []
    for c in summary["configs"]:
        m = c.get("mixed", {"endpoints": {}, "requests_per_s": float("nan"), "errors": 0})
        lat = [f"{m['endpoints'][e]['p50_ms']:.0f} / {m['endpoints'][e]['p99_ms']:.0f}" if e in m["endpoints"]
               else "" for e in ENDPOINTS]
        rows.append([c["name"], f"{c['caption_only']['requests_per_s']:.1f}", f"{m['requests_per_s']:.1f}", *lat,
                     c["caption_only"]["errors"] + m["errors"]])
    return format_table(rows, ("server", "caption-only req/s", "mixed req/s", "caption p50/p99 ms",
                               "search p50/p99 ms", "ask p50/p99 ms", "errors"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.environ.get("VISLANG_DATA"), help="data root for the shapes data")
    ap.add_argument("--work", help="work folder (runs, pictures, index, logs; kept; default: a temporary one)")
    for task, model in MODELS.items():
        ap.add_argument(f"--{task}", metavar="RUN", help=f"a trained {task} run (default: train {model})")
    ap.add_argument("--train-steps", type=int, default=80, help="steps of each trained run (default 80)")
    ap.add_argument("--images", type=int, default=48, help="pictures drawn and indexed (default 48)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--requests-per-client", type=int, default=100,
                    help="mixed-phase requests per client (default 100; the issue's figure is 1000)")
    ap.add_argument("--caption-requests-per-client", type=int, default=25,
                    help="caption-only phase requests per client per repeat (default 25)")
    ap.add_argument("--repeats", type=int, default=3, help="caption-only repeats (median; default 3)")
    ap.add_argument("--max-wait-ms", type=float, nargs="+", default=[5.0],
                    help="batching configurations (--max-batch 16) to measure; the first is also crash-tested")
    ap.add_argument("--server-threads", type=int, nargs="+", default=[1, 2],
                    help="OMP_NUM_THREADS of the server: every configuration at each (default 1 2)")
    ap.add_argument("--kill-after", type=int, default=100, help="crash test: answers before the kill (100)")
    ap.add_argument("--skip-crash", action="store_true")
    ap.add_argument("--out", help="also write the JSON summary here")
    args = ap.parse_args(argv)
    if not args.root and not all(getattr(args, t) for t in MODELS):
        ap.error("--root (or $VISLANG_DATA) is needed to train runs")

    import torch

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vislang-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VISLANG_QUIET": "1", "OMP_NUM_THREADS": "1"}
    t_start = time.perf_counter()
    try:
        runs = train_runs(args, work, env)
        pictures = draw_pictures(work / "pictures", args.images)
        index = work / "pictures.index"
        if not index.is_dir():
            vislang(["index", "build", "--model", str(runs["retrieval"]), "--images", str(work / "pictures"),
                     "-o", str(index)], env)
        watched = [*runs.values(), index, work / "pictures"]
        hashes = tree_hashes(watched)
        reqs = build_requests(pictures)
        log = work / "serve.log"
        log.write_text("")
        summary: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
                       f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at start",
            "torch": torch.__version__, "server_threads": args.server_threads, "clients": args.clients,
            "requests_per_client": args.requests_per_client,
            "caption_requests_per_client": args.caption_requests_per_client, "repeats": args.repeats,
            "runs": {t: f"{runs[t]} ({MODELS[t]})" for t in MODELS}, "distinct_requests": {e: len(reqs[e]) for e in reqs},
            "configs": []}
        summary["caption_compute_ceiling"] = {
            f"{t} thread{'s' if t > 1 else ''}": compute_ceiling(runs["caption"], pictures, t, args.repeats)
            for t in args.server_threads}
        print(f"compute ceiling: {summary['caption_compute_ceiling']}", file=sys.stderr)
        reference = None
        for threads in args.server_threads:
            for batch, wait in [(16, w) for w in args.max_wait_ms] + [(1, 0.0)]:
                name = (f"{threads} thread{'s' if threads > 1 else ''}, max-batch {batch}"
                        + (f", max-wait {wait:g} ms" if batch > 1 else ""))
                print(f"{name}:", file=sys.stderr)
                server = Server(runs, index, batch, wait, threads, log)
                figures, answers = measure_config(name, server, reqs, args, reference)
                summary["configs"].append({"threads": threads, "max_batch": batch, **figures})
                if reference is None:
                    reference = answers
        assert reference is not None
        summary["reference_errors"] = sum(isinstance(a, str) for a in reference.values())
        summary["ratios_vs_batch_1"] = ratios(summary["configs"])
        if not args.skip_crash:
            print("crash test:", file=sys.stderr)
            summary["crash"] = crash_test(runs, index, reqs, reference, args, log)
        summary["files_unchanged"] = tree_hashes(watched) == hashes
        summary["files_hashed"] = len(hashes)
        summary["server_log_tracebacks"] = log.read_text(errors="replace").count("Traceback")
        summary["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
        summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(table(summary), file=sys.stderr)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    errors = summary["reference_errors"] + sum(c["caption_only"]["errors"] + c.get("mixed", {}).get("errors", 0)
                                               + c["sequential_errors"] for c in summary["configs"])
    crash_ok = args.skip_crash or summary["crash"]["passed"]
    return 0 if errors == 0 and crash_ok and summary["files_unchanged"] else 1


if __name__ == "__main__":
    sys.exit(main())
