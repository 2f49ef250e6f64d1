"""Benchmark: PTB tokenisation + BLEU-1..4 + ROUGE-L + CIDEr-D, vislang against pycocoevalcap; VQA accuracy at
the size of VQA v2 val.

Captions: synthetic COCO-like data, 5,000 images (``--images 40504``: COCO val 2014) x 5 references of 8-14
words drawn from a Zipf-like vocabulary of 2,000 words (first word capitalised, some commas, most captions end
with a period), and one candidate per image made by perturbing one of its references. Both implementations get
the same captions, run the same steps (tokenise references and candidates, then score), several times in the
same process; the table shows the median time of each step and the script fails if any score differs by more
than 1e-9 or any tokenised caption differs.

VQA (``--vqa 5000,40000,214354``): ``evaluate_vqa`` on synthetic VQA v2-like questions of each size (10 human
answers each, yes/no, number and other answers in VQA v2 val's proportions, some written differently so that
the normalisation runs), median time of several runs; no peer (the official evaluation is a script, not an
installable package): the rows show how the time grows with the number of questions.

Usage: python bench/metrics.py [--images 5000] [--runs 3] [--seed 0] [--vqa SIZES] [--skip-captions]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from timing import median_time

from vislang.data.records import QA
from vislang.utils.io import format_table

CONSONANTS = "bcdfghjklmnprstvwz"
VOWELS = "aeiou"


def make_vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pronounceable lower-case words of 1-4 syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = int(rng.integers(1, 5))
        word = "".join(rng.choice(list(CONSONANTS)) + rng.choice(list(VOWELS)) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(list(CONSONANTS))
        words[word] = None
    return list(words)


def make_caption(words: list[str], rng: np.random.Generator) -> str:
    """Join words like a caption: capitalised first word, maybe a comma, usually a final period."""
    words = list(words)
    words[0] = words[0].capitalize()
    if len(words) > 4 and rng.random() < 0.2:
        words[int(rng.integers(1, len(words) - 2))] += ","
    return " ".join(words) + ("." if rng.random() < 0.7 else "")


def make_data(images: int, refs: int, vocab_size: int, seed: int) -> tuple[dict, dict]:
    """COCO-style ``gts`` and ``res``: ``{image_id: [{"caption": ...}, ...]}``."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(vocab_size, rng)
    zipf = 1.0 / np.arange(1, vocab_size + 1)
    zipf /= zipf.sum()
    gts, res = {}, {}
    for image in range(images):
        sentences = [list(rng.choice(vocab, size=int(rng.integers(8, 15)), p=zipf)) for _ in range(refs)]
        gts[image] = [{"caption": make_caption(s, rng)} for s in sentences]
        candidate = list(sentences[int(rng.integers(refs))])
        for _ in range(int(rng.integers(0, 5))):  # substitute or drop a few words
            i = int(rng.integers(len(candidate)))
            if rng.random() < 0.5 and len(candidate) > 4:
                del candidate[i]
            else:
                candidate[i] = str(rng.choice(vocab, p=zipf))
        res[image] = [{"caption": make_caption(candidate, rng)}]
    return gts, res


def run_pipeline(tokenizer: object, scorers: Sequence[tuple[str, object]], gts: dict, res: dict
                 ) -> tuple[dict[str, float], dict[str, object], dict, dict]:
    """Tokenise then score; returns step times, scores and the tokenised captions."""
    times, scores = {}, {}
    t = time.perf_counter()
    gts_tok = tokenizer.tokenize(gts)
    res_tok = tokenizer.tokenize(res)
    times["tokenise"] = time.perf_counter() - t
    for name, scorer in scorers:
        t = time.perf_counter()
        scores[name] = scorer.compute_score(gts_tok, res_tok)
        times[name] = time.perf_counter() - t
    times["total"] = sum(times.values())
    return times, scores, gts_tok, res_tok


def pycocoevalcap_pipeline(gts: dict, res: dict):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    class QuietBleu(Bleu):
        def compute_score(self, gts, res):
            return super().compute_score(gts, res, verbose=0)

    return run_pipeline(PTBTokenizer(), [("BLEU", QuietBleu(4)), ("ROUGE-L", Rouge()), ("CIDEr-D", Cider())],
                        gts, res)


def vislang_pipeline(gts: dict, res: dict):
    from vislang.metrics.captions import SharedScorers
    from vislang.metrics.ptb_tokenizer import PTBTokenizer

    shared = SharedScorers()  # BLEU and CIDEr-D count the n-grams of the evaluated set once
    return run_pipeline(PTBTokenizer(), [("BLEU", shared.bleu), ("ROUGE-L", shared.rouge),
                                         ("CIDEr-D", shared.cider)], gts, res)


def max_difference(a: object, b: object) -> float:
    """Largest absolute difference between two nested score structures."""
    if isinstance(a, (list, tuple, np.ndarray)):
        return max((max_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return abs(float(a) - float(b))


# ------------------------------------------------------------------------------------------------------ VQA

ANSWER_TYPES = {"yes/no": 0.376, "number": 0.130, "other": 0.494}  # VQA v2 val's proportions
QUESTION_TYPES = 65  # as many as VQA v2 has
VARIANTS = (str.capitalize, lambda a: a + ".", lambda a: "the " + a, lambda a: a.replace(" ", "-"))


def make_vqa(questions: int, seed: int) -> tuple[list[QA], dict[int, str]]:
    """VQA v2-like questions with 10 human answers each, and a prediction per question id.

    A question's humans agree on its majority answer 0-10 times (uniformly), the others answer something else
    of the same type; 15 % of the answers are written differently (capitalised, a final period, an article,
    hyphens). "other" answers are 1-3 words of a Zipf-like vocabulary of 2,000; predictions are the majority
    answer 65 % of the time.
    """
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(2000, rng)
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    lengths = rng.integers(1, 4, size=20000)
    words = rng.choice(len(vocab), size=int(lengths.sum()), p=zipf / zipf.sum())
    starts = np.cumsum(lengths) - lengths
    pools = {"yes/no": ["yes", "no"], "number": [str(k) for k in range(21)] + ["two", "three", "ten"],
             "other": [" ".join(vocab[w] for w in words[s: s + n]) for s, n in zip(starts, lengths)]}
    kinds = rng.choice(list(ANSWER_TYPES), size=questions, p=list(ANSWER_TYPES.values()))
    agree = rng.integers(0, 11, size=questions)
    variant = np.where(rng.random((questions, 10)) < 0.15,
                       rng.integers(len(VARIANTS), size=(questions, 10)), -1)  # [Q, 10] -1: as drawn
    correct = rng.random(questions) < 0.65
    drawn = {}
    for kind, pool in pools.items():  # column 0: the majority answer, 1-10: other answers
        p = 1.0 / np.arange(1, len(pool) + 1)
        picks = rng.choice(len(pool), size=(int((kinds == kind).sum()), 11), p=p / p.sum())
        drawn[kind] = iter(picks.tolist())
    out, predictions = [], {}
    for q, kind in enumerate(kinds.tolist()):
        pool, picks = pools[kind], next(drawn[kind])
        answers = [pool[picks[0]] if i < agree[q] else pool[picks[i + 1]] for i in range(10)]
        answers = [VARIANTS[v](a) if v >= 0 else a for a, v in zip(answers, variant[q].tolist())]
        qid = 1000 * q + 7
        out.append(QA("?", answers, question_type=f"type {q % QUESTION_TYPES}", answer_type=kind,
                      question_id=qid))
        predictions[qid] = pool[picks[0]] if correct[q] else pool[picks[10]]
    return out, predictions


def bench_vqa(sizes: Sequence[int], runs: int, seed: int) -> None:
    """Print the median time of ``evaluate_vqa`` at each size."""
    from vislang.metrics import evaluate_vqa

    rows = []
    for n in sizes:
        questions, predictions = make_vqa(n, seed)
        accuracy = evaluate_vqa(questions, predictions).overall  # also the warm-up
        seconds = median_time(functools.partial(evaluate_vqa, questions, predictions), runs, warmup=0)
        rows.append([n, 10 * n, seconds, f"{1e6 * seconds / n:.1f}", f"{accuracy:.4f}"])
        print(f"{n} questions: {seconds:.3f} s", file=sys.stderr)
    print(format_table(rows, ["questions", "human answers", "evaluate_vqa s", "us per question", "accuracy"]))


# ------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vqa", default="", metavar="SIZES",
                        help="numbers of questions to time evaluate_vqa at, comma-separated "
                             "(VQA v2 val: 214354)")
    parser.add_argument("--skip-captions", action="store_true", help="only the VQA rows")
    args = parser.parse_args(argv)

    if args.vqa:
        bench_vqa([int(n) for n in args.vqa.split(",")], args.runs, args.seed)
    return 0 if args.skip_captions else bench_captions(args)


def bench_captions(args: argparse.Namespace) -> int:
    """The caption table; non-zero unless tokenisation and scores agree with pycocoevalcap."""
    gts, res = make_data(args.images, args.refs, args.vocab, args.seed)
    print(f"{args.images} images x {args.refs} references, vocabulary {args.vocab}, {args.runs} runs each",
          file=sys.stderr)
    pipelines: dict[str, Callable] = {"pycocoevalcap": pycocoevalcap_pipeline, "vislang": vislang_pipeline}
    times: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
    outputs = {}
    for run in range(args.runs):
        for name, pipeline in pipelines.items():
            run_times, scores, gts_tok, res_tok = pipeline(gts, res)
            times[name].append(run_times)
            outputs[name] = (scores, gts_tok, res_tok)
            print(f"run {run + 1}: {name} {run_times['total']:.2f} s", file=sys.stderr)

    ref_scores, ref_gts, ref_res = outputs["pycocoevalcap"]
    ours_scores, our_gts, our_res = outputs["vislang"]
    same_tokens = ref_gts == our_gts and ref_res == our_res
    worst = {name: max_difference(ref_scores[name], ours_scores[name]) for name in ref_scores}

    steps = ["tokenise", "BLEU", "ROUGE-L", "CIDEr-D", "total"]
    rows = []
    for step in steps:
        peer = statistics.median(t[step] for t in times["pycocoevalcap"])
        ours = statistics.median(t[step] for t in times["vislang"])
        first = times["vislang"][0][step]
        rows.append([step, peer, ours, first, f"{peer / ours:.1f}x"])
    print(format_table(rows, ["step", "pycocoevalcap s", "vislang s", "vislang 1st run s", "speed-up"]))
    bleu = ours_scores["BLEU"][0]
    print(f"scores: BLEU-1..4 {', '.join(f'{b:.4f}' for b in bleu)}; ROUGE-L {ours_scores['ROUGE-L'][0]:.4f}; "
          f"CIDEr-D {ours_scores['CIDEr-D'][0]:.4f}")
    print(f"identical tokenisation: {same_tokens}; largest score difference: "
          + ", ".join(f"{name} {value:.1e}" for name, value in worst.items()))
    return 0 if same_tokens and max(worst.values()) <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
