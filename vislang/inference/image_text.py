"""What the image + text predictors (VQA and classification) share: the tokenizer, the outputs and the
training text length of the model folder, and the fusion model run on one image and its texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vislang.data.text import TextTokenizer
from vislang.inference.base import Predictor
from vislang.models.fusion_model import FusionModelOutput
from vislang.tasks.image_text import run_fusion
from vislang.utils.tensors import pad_sequences


class ImageTextPredictor(Predictor):
    """A trained image + text model with its tokenizer, outputs and image preprocessing."""

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.trained.artifacts.tokenizer

    @property
    def labels(self) -> Any:
        """The outputs: the answer vocabulary (VQA) or the class space (classification)."""
        return self.trained.artifacts.labels

    @property
    def max_len(self) -> int:
        """Longest text in tokens, as trained."""
        return self.trained.artifacts.max_len

    def run_texts(self, images: Tensor, texts: Sequence[str], image_index: Tensor | None = None
                  ) -> FusionModelOutput:
        """The model on preprocessed images ``(B, 3, S, S)`` and ``texts`` (truncated to :attr:`max_len` tokens);
        ``image_index`` ``(Q,)``: the image of each text (None: one text per image)."""
        tokens, lengths = self.encode_texts(texts)                                    # (Q, L), (Q,)
        return run_fusion(self.model, images, tokens, lengths, image_index)

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``(Q, L)`` (padded, truncated to :attr:`max_len`) and lengths ``(Q,)`` of ``texts``."""
        return pad_sequences([self.tokenizer.encode(t, max_len=self.max_len) for t in texts], self.tokenizer.pad_id)
