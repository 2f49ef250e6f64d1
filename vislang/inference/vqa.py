"""Answering questions about an image: ``vislang.load("runs/vqa").ask("scene.png", ["what color is the circle?"])``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vislang.data.text import Vocabulary, has_words
from vislang.errors import VislangError
from vislang.inference.base import ImageInput
from vislang.inference.image_text import ImageTextPredictor
from vislang.tasks.vqa import AnswerVocab


@dataclass
class Answer:
    """One answered question.

    Attributes:
        question: The question as asked.
        answer: The top answer.
        confidence: Its probability (sigmoid of its logit).
        top: The ``k`` best ``(answer, probability)`` pairs.
        attention: ``(h, w)`` attention over the image regions (attending fusions), else None.
        notes: What was done to the question (truncated, unknown words).
    """

    question: str
    answer: str
    confidence: float
    top: list[tuple[str, float]]
    attention: Tensor | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "confidence": round(self.confidence, 4),
                "top": [{"answer": a, "p": round(p, 4)} for a, p in self.top], "notes": self.notes}


class VQAPredictor(ImageTextPredictor):
    """A trained VQA model with its tokenizer, answer vocabulary and image preprocessing (:attr:`max_len`: the
    longest question in tokens, as trained)."""

    task = "vqa"

    @property
    def answers(self) -> AnswerVocab:
        return self.labels

    def check_question(self, question: str) -> list[str]:
        """Notes on a question (truncation, unknown words); raises on an empty one."""
        if not isinstance(question, str) or not question.strip() or not has_words(question):
            raise VislangError(f"the question {question!r} is empty (no words); ask e.g. \"what color is the "
                               "circle?\"")
        notes = []
        n = len(self.tokenizer.encode(question))
        if n > self.max_len:
            notes.append(f"question truncated to its first {self.max_len - 2} tokens (of {n - 2}); the model "
                         f"was trained on questions of at most {self.max_len} tokens")
        if isinstance(self.tokenizer, Vocabulary):
            unknown = [w for w in self.tokenizer.tokenize(question) if w not in self.tokenizer]
            if unknown:
                notes.append(f"unknown words read as <unk>: {', '.join(dict.fromkeys(unknown))}")
        return notes

    def ask(self, image: ImageInput, questions: Sequence[str], k: int = 5) -> list[Answer]:
        """Answer ``questions`` about one image (a path or a PIL image; the image is encoded once for all)."""
        return self._answer(self.images_tensor([image]), questions, torch.zeros(len(questions), dtype=torch.long), k)

    def ask_many(self, images: Sequence[ImageInput], questions: Sequence[str], k: int = 5) -> list[Answer]:
        """Answer one question per image in one batch: ``questions[i]`` about ``images[i]``."""
        if len(images) != len(questions):
            raise VislangError(f"ask_many takes one question per image, got {len(images)} images and "
                               f"{len(questions)} questions")
        return self._answer(self.images_tensor(images), questions, None, k)

    @torch.inference_mode()
    def _answer(self, x: Tensor, questions: Sequence[str], image_index: Tensor | None, k: int) -> list[Answer]:
        """Answers of ``questions`` about the images ``x`` ``(B, 3, S, S)``; ``image_index`` ``(Q,)``: the
        image of each question (None: one question per image)."""
        notes = [self.check_question(q) for q in questions]
        out = self.run_texts(x, questions, image_index)
        probs = out.logits.float().sigmoid().cpu()                                    # (Q, A)
        answers = []
        for row, question in enumerate(questions):
            p, idx = probs[row].topk(min(k, probs.shape[1]))
            top = [(self.answers.answers[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())]
            att = out.attention[row].float().cpu().view(*out.grid_hw) if out.attention is not None else None
            answers.append(Answer(question, top[0][0], top[0][1], top, att, notes[row]))
        return answers
