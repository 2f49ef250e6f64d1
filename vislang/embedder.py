"""Embedding images and texts with a trained dual encoder from Python: ``Embedder.load(run)``.

```python
from vislang.embedder import Embedder

emb = Embedder.load("runs/retrieval")                       # best checkpoint of a run
images = emb.embed_images(["cat.png", "dog.jpg"])           # (2, E) float32, L2-normalised
texts = emb.embed_texts(["a sleepy cat", "a dog"])          # (2, E)
scores = texts @ images.T                                    # cosine similarities
emb.model_id, emb.dim                                        # checkpoint fingerprint, E
```
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from vislang.captioner import task_checkpoint
from vislang.data.images import load_image
from vislang.data.text import TextTokenizer
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import VislangError
from vislang.models.text_encoders import saved_tokenizer
from vislang.tasks.retrieval import embed_texts
from vislang.train.checkpoint import WEIGHTS_FILE, load_model
from vislang.train.loop import resolve_device


class Embedder:
    """A trained dual encoder with its tokenizer and image preprocessing.

    Args:
        model: The dual encoder (``encode_image``, ``encode_text``, ``embed_dim``).
        tokenizer: The tokenizer of its text tower.
        transform_cfg: The image preprocessing it was trained with.
        max_len: Longest text in tokens (longer texts are truncated).
        model_id: Fingerprint of the checkpoint.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: TextTokenizer, transform_cfg: TransformConfig,
                 max_len: int = 64, model_id: str = ""):
        self.model, self.tokenizer, self.max_len = model.eval(), tokenizer, max_len
        self.transform_cfg = transform_cfg
        self.transform = build_transform(transform_cfg)
        self.model_id = model_id
        self.checkpoint: Path | None = None

    @classmethod
    def load(cls, run: str | os.PathLike, checkpoint: str = "best", device: str = "auto") -> Embedder:
        """Load from a run directory (``checkpoint``: ``best`` or ``last``) or a checkpoint directory.

        Raises:
            VislangError: Not a run or checkpoint directory, or not a retrieval checkpoint.
        """
        ckpt, spec = task_checkpoint(run, checkpoint, "retrieval", "a retrieval")
        tf = TransformConfig.from_dict(spec["transform"])
        tokenizer = saved_tokenizer(ckpt, spec)
        model = load_model(ckpt, resolve_device(device))
        out = cls(model, tokenizer, tf, int(spec.get("max_len", 64)), fingerprint(ckpt, spec["name"]))
        out.checkpoint = ckpt
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        """Width ``E`` of the embeddings."""
        return int(self.model.embed_dim)

    @torch.no_grad()
    def embed_images(self, images: Sequence[str | os.PathLike | Image.Image], batch_size: int = 64) -> Tensor:
        """L2-normalised embeddings ``(N, E)`` (float32, CPU) of images given as paths or PIL images.

        Raises:
            vislang.errors.ImageError: A file is missing or not a decodable image.
        """
        out = [torch.empty(0, self.dim)]
        for start in range(0, len(images), batch_size):
            chunk = [im if isinstance(im, Image.Image) else load_image(im) for im in images[start:start + batch_size]]
            x = torch.stack([self.transform(im.convert("RGB")) for im in chunk]).to(self.device)  # (B, 3, S, S)
            out.append(self.model.encode_image(x).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """L2-normalised embeddings ``(N, E)`` (float32, CPU) of texts."""
        if isinstance(texts, str):
            raise VislangError("embed_texts takes a list of texts, not one string")
        return embed_texts(self.model, self.tokenizer, list(texts), self.max_len, batch_size)


def fingerprint(checkpoint: str | os.PathLike, name: str) -> str:
    """A stable id of a checkpoint's weights: ``<model name>-<first 16 hex digits of their sha256>``."""
    digest = hashlib.sha256()
    path = Path(checkpoint) / WEIGHTS_FILE
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{name}-{digest.hexdigest()[:16]}"
