"""``vislang evaluate generate``: the real command on the session's tiny generator, judged by the session's tiny
retrieval model, checked against direct computations with the judge (ceiling, generator, floor), against the
generator itself (the samples), and the Frechet distance against hand computations."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vislang.cli import main
from vislang.metrics.frechet import Gaussian, frechet_distance, frechet_from_stats, gaussian_stats
from vislang.tasks.generate_eval import CEILING, FLOOR, GENERATOR, NOISE, REAL_TRAIN, text_tower_note
from vislang.tasks.generate_scores import NearestCaption, derangement, evenly_spaced, pick_prompts

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"  # the session's generator and retrieval runs are trained on it
STEPS, GUIDANCE = 3, 3.0


@pytest.fixture(scope="module")
def evaluation(generate_run: Path, retrieval_run: Path, data_root: Path, tmp_path_factory) -> tuple[Path, str]:
    """``(out dir, stdout)`` of one real ``vislang evaluate generate`` on the shapes test split (8 prompts)."""
    out = tmp_path_factory.mktemp("generate-eval") / "eval"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["evaluate", "generate", "--model", str(generate_run), "--judge", str(retrieval_run), "--data",
                   SHAPES, "--root", str(data_root), "--split", "test", "--steps", str(STEPS), "--guidance",
                   str(GUIDANCE), "--max-prompts", "8", "--seed", "0", "--out", str(out)])
    assert rc == 0
    return out, buf.getvalue()


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_writes_the_table_report_and_samples(evaluation):
    out, stdout = evaluation
    m = metrics(out)
    s = m["settings"]
    assert (s["prompts"], s["steps"], s["guidance"], s["seed"], s["split"]) == (8, STEPS, GUIDANCE, 0, "test")
    assert len(m["prompts"]) == len(set(m["prompts"])) == 8
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"{j:04d}.png" for j in range(8)]
    assert Image.open(out / "samples" / "0000.png").size == (16, 16)
    rows = m["rows"]
    for name, row in rows.items():
        assert name in stdout and name in (out / "table.md").read_text(encoding="utf-8")
        for k in ("R@1", "R@5"):
            assert row[k] is None or 0.0 <= row[k] <= 1.0, (name, row)
        assert row["R@1"] is None or row["R@1"] <= row["R@5"]
        assert row["mean_cosine"] is None or -1.0 <= row["mean_cosine"] <= 1.0
        assert row["frechet"] is None or row["frechet"] >= 0.0
        assert row["median_px"] is None or 0.0 <= row["median_px"] <= 1.0
    # uniform noise is farther from the real images than real training images are, in any judge's space
    assert rows[NOISE]["frechet"] > rows[REAL_TRAIN]["frechet"]
    # the baseline returns training images: nearest-training distance 0 by construction
    assert rows["nearest training caption (baseline)"]["median_px"] == 0.0
    per = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["prompt"] for p in per] == m["prompts"] and all((out / p["sample"]).exists() for p in per)
    assert "nearest-caption baseline" in stdout and "not comparable to Inception FID" in stdout
    assert "NOT comparable to Inception FID" in m["notes"][1]
    page = (out / "report.html").read_text(encoding="utf-8")
    for part in ("Frechet (judge)", GENERATOR, CEILING, "Training curves", "Free compositions", "a blue cat"):
        assert part in page, part
    for img in ("curves.png", "gallery_train.png", "gallery_eval.png", "gallery_compositions.png"):
        assert f"report_files/{img}" in page and (out / "report_files" / img).stat().st_size > 0


def test_ceiling_is_the_judges_own_retrieval_metric(evaluation, retrieval_run: Path, data_root: Path, embedder):
    from vislang.data import load_dataset
    from vislang.tasks.retrieval_eval import evaluate_retriever

    out, _ = evaluation
    direct = evaluate_retriever(retrieval_run, SHAPES, "test", root=str(data_root), captions="first",
                                gallery_key=None, zero_shot=False)
    assert direct.n_images == 8  # every test image has its own first caption: the same 8 pairs
    ceiling = metrics(out)["rows"][CEILING]
    assert ceiling["R@1"] == pytest.approx(direct.image_to_text["R@1"])
    assert ceiling["R@5"] == pytest.approx(direct.image_to_text["R@5"])
    # the real image of each prompt, at full size, scored against its prompt
    by_id = {r.id: r for r in load_dataset(SHAPES, "test", root=data_root).records}
    per = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(by_id[p["real_id"]].captions[0] == p["prompt"] for p in per)
    images = embedder.embed_images([by_id[p["real_id"]].image for p in per]).numpy()
    texts = embedder.embed_texts([p["prompt"] for p in per]).numpy()
    assert ceiling["mean_cosine"] == pytest.approx(float(np.sum(images * texts, axis=1).mean()), abs=1e-5)


def _ranks(sim: np.ndarray) -> np.ndarray:
    """1-based rank of the diagonal entry of each row (ties in its favour)."""
    return 1 + (sim > np.diag(sim)[:, None]).sum(axis=1)


def test_generator_and_floor_rows_are_the_judges_scores_of_the_saved_samples(evaluation, embedder):
    out, _ = evaluation
    m = metrics(out)
    prompts = m["prompts"]
    perm = np.array(m["settings"]["floor_permutation"])
    assert sorted(perm.tolist()) == list(range(8)) and not (perm == np.arange(8)).any()  # a derangement
    images = embedder.embed_images([Image.open(out / "samples" / f"{j:04d}.png") for j in range(8)]).numpy()
    texts = embedder.embed_texts(prompts).numpy()
    for row, t in ((m["rows"][GENERATOR], texts), (m["rows"][FLOOR], texts[perm])):
        sim = images @ t.T
        ranks = _ranks(sim)
        assert row["R@1"] == pytest.approx(np.mean(ranks <= 1))
        assert row["R@5"] == pytest.approx(np.mean(ranks <= 5))
        assert row["mean_cosine"] == pytest.approx(float(np.diag(sim).mean()), abs=1e-5)


def test_samples_are_the_generators_own(evaluation, generate_run: Path):
    import vislang

    out, _ = evaluation
    prompts = metrics(out)["prompts"]
    gen = vislang.load(generate_run)
    for j in (0, 5):  # sample j is prompt j from the noise of seed + j
        got = gen.generate([prompts[j]], steps=STEPS, guidance=GUIDANCE, seed=j)[0].image
        assert np.array_equal(np.asarray(got), np.asarray(Image.open(out / "samples" / f"{j:04d}.png")))


def test_a_judge_that_is_not_a_separate_retrieval_model_is_refused(generate_run: Path, data_root: Path,
                                                                   tmp_path: Path, capsys):
    other = shutil.copytree(generate_run, tmp_path / "other-generator")
    for judge, needle in ((generate_run, "is the generator itself"), (other, "not a retrieval model")):
        rc = main(["evaluate", "generate", "--model", str(generate_run), "--judge", str(judge), "--data", SHAPES,
                   "--root", str(data_root), "--split", "test", "--out", str(tmp_path / "eval")])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert needle in err
    assert not (tmp_path / "eval").exists()


def test_bad_options_are_one_line_errors(generate_run: Path, retrieval_run: Path, data_root: Path, tmp_path: Path,
                                         capsys):
    for flags, needle in ((["--steps", "0"], "steps"), (["--guidance", "-1"], "guidance"),
                          (["--sampler", "euler"], "sampler"), (["--max-prompts", "0"], "max prompts"),
                          (["--compositions", "a cat", " "], "prompt 2 is empty")):
        rc = main(["evaluate", "generate", "--model", str(generate_run), "--judge", str(retrieval_run), "--data",
                   SHAPES, "--root", str(data_root), "--split", "test", "--out", str(tmp_path / "eval"), *flags])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------- the parts


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(50, 6))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x + 1.0) == pytest.approx(6.0)  # a shift moves only the means: |(1,..,1)|^2


def test_frechet_distance_matches_hand_computation_on_small_gaussians():
    # diagonal covariances: d = |mu_a - mu_b|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 = 5 + 1 + 1
    a = Gaussian(np.array([0.0, 0.0]), np.diag([1.0, 4.0]), 10)
    b = Gaussian(np.array([1.0, 2.0]), np.diag([4.0, 9.0]), 10)
    assert frechet_from_stats(a, b) == pytest.approx(7.0)
    assert frechet_from_stats(b, a) == pytest.approx(7.0)
    # a full covariance against the textbook formula with scipy's matrix square root
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 3)), rng.normal(size=(30, 3)) + 0.5
    sa, sb = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    want = (np.sum((xa.mean(0) - xb.mean(0)) ** 2) + np.trace(sa) + np.trace(sb)
            - 2 * np.trace(linalg.sqrtm(sa @ sb).real))
    assert frechet_distance(xa, xb) == pytest.approx(want, rel=1e-6)
    stats = gaussian_stats(xa)
    assert np.allclose(stats.cov, sa) and np.allclose(stats.mean, xa.mean(0)) and stats.n == 40


def test_prompts_are_chosen_the_same_way_every_run(data_root: Path):
    from vislang.data import load_dataset

    records = load_dataset(SHAPES, "train", root=data_root).records
    prompts, owners = pick_prompts(records, 5)
    assert prompts == pick_prompts(records, 5)[0] and len(set(prompts)) == 5 and prompts == sorted(prompts)
    assert all(o.captions[0] == p for o, p in zip(owners, prompts))
    assert evenly_spaced(10, 3) == [1, 5, 8] and evenly_spaced(4, 10) == [0, 1, 2, 3]
    for n in (2, 3, 7, 50):
        perm = derangement(n)
        assert sorted(perm.tolist()) == list(range(n)) and not (perm == np.arange(n)).any()


def test_nearest_caption_baseline_reads_words_not_towers(data_root: Path):
    from vislang.data import load_dataset

    records = load_dataset(SHAPES, "train", root=data_root).records
    retriever = NearestCaption(records)
    i, caption, score = retriever.nearest(records[3].captions[1])
    assert caption == records[3].captions[1] and score == pytest.approx(1.0)
    assert caption in records[i].captions


def test_text_tower_note_says_when_the_judge_shares_the_generators_tower():
    minilm = {"model_config": {"text_encoder": "minilm", "text_mode": "locked", "text_encoder_kwargs": {}}}
    scratch = {"model_config": {"text_encoder": "text_transformer", "text_mode": "scratch"}}
    assert text_tower_note(minilm, minilm).startswith("The judge shares the generator's pre-trained text tower")
    assert "shares no weights" in text_tower_note(minilm, scratch)
    assert "shares no weights" in text_tower_note(scratch, scratch)  # two towers trained from scratch apart
