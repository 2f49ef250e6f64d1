"""Embedding images and texts with a trained dual encoder: ``vislang.load("runs/retrieval")``.

```python
import vislang

emb = vislang.load("runs/retrieval")                        # a RetrievalPredictor (best checkpoint of a run)
images = emb.embed_images(["cat.png", "dog.jpg"])           # (2, E) float32, L2-normalised
texts = emb.embed_texts(["a sleepy cat", "a dog"])          # (2, E)
scores = texts @ images.T                                    # cosine similarities
emb.model_id, emb.dim                                        # checkpoint fingerprint, E
maps = emb.match_maps(["cat.png", "dog.jpg"], texts[0])     # (2, h, w): each map's mean is its score
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

    @torch.inference_mode()
    def match_maps(self, images: Sequence[ImageInput] | Tensor, queries: Tensor, batch_size: int = 64) -> Tensor:
        """Where each image matches a query: float32 CPU maps ``(B, h, w)`` over the image encoder's grid whose
        **mean** is the score ``query · image embedding`` (see :meth:`DualEncoder.region_scores
        <vislang.models.dual_encoder.DualEncoder.region_scores>`; positive cells raise the score).

        Args:
            images: Paths, PIL images or preprocessed ``(3, S, S)`` tensors, or one preprocessed batch
                ``(B, 3, S, S)``.
            queries: L2-normalised query embeddings (a text's or an image's, from :meth:`embed_texts` or
                :meth:`embed_images`): ``(B, E)``, one per image, or ``(E,)`` for all of them.
            batch_size: Images encoded at once.

        Raises:
            VislangError: ``queries`` does not fit the images or the embedding width.
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        queries = torch.as_tensor(queries, dtype=torch.float32)
        n = len(images)
        if queries.dim() not in (1, 2) or queries.shape[-1] != self.dim or (queries.dim() == 2
                                                                              and len(queries) != n):
            raise VislangError(f"match_maps: queries must be ({self.dim},) or ({n}, {self.dim}) for {n} images, "
                               f"got {tuple(queries.shape)}")
        out = []
        for start in range(0, n, batch_size):
            part = images[start:start + batch_size]
            x = part.to(self.device) if isinstance(part, Tensor) else self.images_tensor(part)  # (b, 3, S, S)
            q = queries if queries.dim() == 1 else queries[start:start + batch_size]         # (E,) or (b, E)
            out.append(self.model.region_scores(x, q.to(self.device)).maps.float().cpu())   # (b, h, w)
        return torch.cat(out) if out else torch.empty(0, 0, 0)
