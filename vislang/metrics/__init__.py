"""Evaluation metrics: COCO caption metrics without Java, retrieval, VQA and classification.

Caption metrics give the numbers pycocoevalcap gives (tokenisation, BLEU-1..4, ROUGE-L, CIDEr-D), much
faster and in pure Python; METEOR and SPICE run through their official jars when Java is present and are
reported as unavailable otherwise.
"""

from vislang.metrics.bleu import Bleu, compute_bleu
from vislang.metrics.captions import (
    CAPTION_METRICS,
    CaptionScores,
    SharedScorers,
    evaluate_caption_files,
    evaluate_captions,
    load_coco_annotations,
    load_coco_results,
    tokenize_caption_sets,
)
from vislang.metrics.cider import Cider, compute_cider
from vislang.metrics.classification import (
    ClassificationReport,
    ClassMetrics,
    classification_report,
    confusion_matrix_image,
    save_confusion_matrix_png,
)
from vislang.metrics.ptb_tokenizer import PTBTokenizer, ptb_tokenize_lines, tokenize_captions
from vislang.metrics.retrieval import RetrievalScores, retrieval_scores, retrieval_scores_from_similarity
from vislang.metrics.rouge import Rouge, compute_rouge
from vislang.metrics.vqa import VQAScores, evaluate_vqa, normalize_answer, vqa_accuracy

__all__ = [
    "CAPTION_METRICS",
    "Bleu",
    "CaptionScores",
    "Cider",
    "ClassMetrics",
    "ClassificationReport",
    "PTBTokenizer",
    "RetrievalScores",
    "Rouge",
    "SharedScorers",
    "VQAScores",
    "classification_report",
    "compute_bleu",
    "compute_cider",
    "compute_rouge",
    "confusion_matrix_image",
    "evaluate_caption_files",
    "evaluate_captions",
    "evaluate_vqa",
    "load_coco_annotations",
    "load_coco_results",
    "normalize_answer",
    "ptb_tokenize_lines",
    "retrieval_scores",
    "retrieval_scores_from_similarity",
    "save_confusion_matrix_png",
    "tokenize_caption_sets",
    "tokenize_captions",
    "vqa_accuracy",
]
