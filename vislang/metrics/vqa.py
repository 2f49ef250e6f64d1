"""VQA accuracy as the official VQA evaluation (``vqaEval.py``, GT-Vision-Lab/VQA) computes it.

For a question with human answers ``a_1..a_n`` (n = 10 in VQA v2) and a predicted answer ``p``::

    accuracy = mean over i of min(1, #{j != i : a_j == p} / 3)

i.e. ``min(#matching humans / 3, 1)`` averaged over the n leave-one-out subsets of n - 1 answers. Answers
are compared after the official normalisation, which is applied to the prediction and the human answers
only when the humans disagree (otherwise the raw answers are compared, after stripping whitespace):

- punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space
  in the answer (or the answer has a digit-comma-digit), else replaced by a space; then periods not
  followed by a digit are deleted (at most 32 of them, a quirk of the official code kept here);
- lower-casing, number words ``none``/``zero``..``ten`` to digits, articles ``a an the`` dropped;
- contractions written without apostrophe restored (``dont`` -> ``don't``, ``whatll`` -> ``what'll``).

With a single reference answer (generated data) the leave-one-out set is empty and the official formula
gives 0; vislang then scores exact match of the normalised answers instead.

The official code ran on Python 2, where ``\\d`` without ``re.UNICODE`` is ``[0-9]`` only: its regexes are
compiled here with ``re.ASCII``, so other digits (``１,０００``, ``٣.٥``) are treated as it treats them. Scoring
takes time linear in the number of questions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vislang.data.records import QA
from vislang.errors import DataError

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})

# The contractions the official evaluation restores. Each is looked up by its spellings with one
# apostrophe left out ("couldn't've" by "couldnt've" and "couldn'tve"; "don't" by "dont").
_CONTRACTIONS = """
    ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd
    he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've
    mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've
    somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd
    something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're
    they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's where've
    who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
    y'all'd've you'd you'd've you'll you're you've
"""


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CONTRACTIONS.split():
        apostrophes = [i for i, c in enumerate(word) if c == "'"]
        for i in apostrophes:
            table[word[:i] + word[i + 1:]] = word
    table["somebody'd"] = "somebodyd"  # sic: the official table maps this one backwards
    return table


CONTRACTIONS = _contraction_table()
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)", re.ASCII)  # the official commaStrip
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)", re.ASCII)  # periodStrip, less its no-op "(?!<=\d)"
_MAX_PERIODS_REMOVED = 32  # the official code passes re.UNICODE (32) as the substitution count


def normalize_punctuation(text: str) -> str:
    """The official ``processPunctuation``."""
    out = text
    has_digit_comma_digit = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or has_digit_comma_digit:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def normalize_digits_articles(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, no articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation compares it when the human answers disagree."""
    return _normalized(_strip(text))


def _strip(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _normalized(stripped: str) -> str:
    return normalize_digits_articles(normalize_punctuation(stripped))


class _Normalized(dict):
    """``{stripped answer: normalised answer}`` filled as answers come: answers repeat across questions, so
    an evaluation normalises each distinct one once."""

    def __missing__(self, stripped: str) -> str:
        self[stripped] = value = _normalized(stripped)
        return value


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Accuracy in [0, 1] of one predicted answer against the human answers of its question."""
    return _accuracy(prediction, answers, _normalized)


def _accuracy(prediction: str, answers: Sequence[str], normalize: Callable[[str], str]) -> float:
    """:func:`vqa_accuracy`, normalising stripped answers with ``normalize``."""
    if not answers:
        raise DataError("a question needs at least one human answer")
    humans = [_strip(a) for a in answers]
    predicted = _strip(prediction)
    if len(humans) == 1:
        return float(normalize(predicted) == normalize(humans[0]))
    if len(set(humans)) > 1:
        humans = [normalize(a) for a in humans]
        predicted = normalize(predicted)
    matches = [h == predicted for h in humans]
    total = sum(matches)
    # Leaving out answer i removes it from the matches when it matched.
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(humans)


@dataclass
class VQAScores:
    """Accuracies in [0, 1] (the official evaluation prints them x 100, rounded to 2 decimals).

    Attributes:
        overall: Mean accuracy over all questions.
        per_question_type: Mean accuracy of each question type.
        per_answer_type: Mean accuracy of each answer type.
        per_question: Accuracy of each question id.
    """

    overall: float
    per_question_type: dict[str, float] = field(default_factory=dict)
    per_answer_type: dict[str, float] = field(default_factory=dict)
    per_question: dict[Hashable, float] = field(default_factory=dict)


def _mean_by(groups: Mapping[str, list[float]]) -> dict[str, float]:
    return {key: sum(values) / len(values) for key, values in groups.items()}


def evaluate_vqa(questions: Iterable[QA], predictions: Mapping[Hashable, str]) -> VQAScores:
    """Score predicted answers (by question id) against questions with human answers.

    Raises:
        DataError: a question has no id or no answer, or predictions and questions cover different ids.
    """
    questions = list(questions)
    ids = []
    for index, qa in enumerate(questions):
        if qa.question_id is None:
            raise DataError("missing", where=f"question {index}", field="question_id")
        if not qa.answers:
            raise DataError("no human answer", where=f"question {qa.question_id!r}", field="answers")
        ids.append(qa.question_id)
    known = set(ids)
    missing = [i for i in ids if i not in predictions]
    extra = [i for i in predictions if i not in known]
    if missing or extra:
        raise DataError(f"predictions and questions differ: {len(missing)} questions without prediction "
                        f"{missing[:10]}, {len(extra)} predictions for unknown questions {extra[:10]}")
    per_question: dict[Hashable, float] = {}
    by_question_type: dict[str, list[float]] = {}
    by_answer_type: dict[str, list[float]] = {}
    normalize = _Normalized().__getitem__
    for qa in questions:
        accuracy = _accuracy(predictions[qa.question_id], qa.answers, normalize)
        per_question[qa.question_id] = accuracy
        by_question_type.setdefault(qa.question_type, []).append(accuracy)
        by_answer_type.setdefault(qa.answer_type, []).append(accuracy)
    overall = sum(per_question.values()) / len(per_question) if per_question else float("nan")
    return VQAScores(overall=overall, per_question_type=_mean_by(by_question_type),
                     per_answer_type=_mean_by(by_answer_type), per_question=per_question)
