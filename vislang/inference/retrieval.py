"""Embedding images and texts with a trained dual encoder: ``vislang.load("runs/retrieval")``.

```python
import vislang

emb = vislang.load("runs/retrieval")                        # a RetrievalPredictor (best checkpoint of a run)
images = emb.embed_images(["cat.png", "dog.jpg"])           # (2, E) float32, L2-normalised
texts = emb.embed_texts(["a sleepy cat", "a dog"])          # (2, E)
scores = texts @ images.T                                    # cosine similarities
emb.model_id, emb.dim                                        # checkpoint fingerprint, E
```
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vislang.data.text import TextTokenizer
from vislang.errors import VislangError
from vislang.inference.base import ImageInput, Predictor
from vislang.tasks.base import TrainedModel
from vislang.tasks.retrieval_embed import embed_texts, model_fingerprint


class RetrievalPredictor(Predictor):
    """A trained dual encoder with its tokenizer and image preprocessing.

    Attributes:
        model_id: Fingerprint of the checkpoint's weights, ``<model name>-<16 hex digits of their sha256>``
            (what a saved index records and compares).
    """

    task = "retrieval"

    def __init__(self, trained: TrainedModel):
        super().__init__(trained)
        self.model_id = model_fingerprint(trained.folder, trained.config)

    @property
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer of the text tower."""
        return self.trained.artifacts

    @property
    def max_len(self) -> int:
        """Longest text in tokens (longer texts are truncated)."""
        return int(self.config.get("max_len", 64))

    @property
    def dim(self) -> int:
        """Width ``E`` of the embeddings."""
        return int(self.model.embed_dim)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[ImageInput], batch_size: int = 64) -> Tensor:
        """L2-normalised embeddings ``(N, E)`` (float32, CPU) of images given as paths or PIL images.

        Raises:
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        out = [torch.empty(0, self.dim)]
        for _, x in self.batches(images, batch_size):                                  # x: (B, 3, S, S)
            out.append(self.model.encode_image(x).float().cpu())                      # (B, E)
        return torch.cat(out)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """L2-normalised embeddings ``(N, E)`` (float32, CPU) of texts.

        Raises:
            VislangError: ``texts`` is one string rather than a list of them.
        """
        if isinstance(texts, str):
            raise VislangError("embed_texts takes a list of texts, not one string")
        return embed_texts(self.model, self.tokenizer, list(texts), self.max_len, batch_size)
