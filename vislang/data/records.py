"""The sample records every dataset reader produces.

A :class:`Record` is one image with everything known about it: captions, a class label, question-answer
pairs and free metadata. Tasks flatten records as they need (one sample per caption for captioning, one per
question for VQA).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class QA:
    """One question about an image.

    Attributes:
        question: The question text.
        answers: Human answers (VQA v2 has ten; generated data has one).
        question_type: A type used to break accuracy down ("color", "count", ...).
        answer_type: VQA answer type ("yes/no", "number", "other") where known.
        question_id: Identifier from the source data, if any.
    """

    question: str
    answers: list[str]
    question_type: str = ""
    answer_type: str = ""
    question_id: int | str | None = None


@dataclass
class Record:
    """One image and its annotations.

    Attributes:
        id: Identifier unique within the dataset.
        image: Absolute path of the image file.
        captions: Reference captions (may be empty).
        label: Class label, if any.
        qa: Question-answer pairs about the image.
        meta: Free metadata (vendor, concept, group, ...), kept through save/load.
    """

    id: str
    image: str
    captions: list[str] = field(default_factory=list)
    label: str | None = None
    qa: list[QA] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self, image: str | None = None) -> dict[str, Any]:
        """The record as one JSONL manifest object (``image`` may be given relative)."""
        out: dict[str, Any] = {"id": self.id, "image": image if image is not None else self.image}
        if self.captions:
            out["text"] = self.captions[0] if len(self.captions) == 1 else list(self.captions)
        if self.label is not None:
            out["label"] = self.label
        if len(self.qa) == 1 and not self.qa[0].question_type and self.qa[0].question_id is None \
                and not self.qa[0].answer_type:
            out["question"] = self.qa[0].question
            a = self.qa[0].answers
            out["answer"] = a[0] if len(a) == 1 else list(a)
        elif self.qa:
            out["qa"] = [{k: v for k, v in asdict(q).items() if v not in ("", None)} for q in self.qa]
        for k, v in self.meta.items():
            out.setdefault(k, v)
        return out
