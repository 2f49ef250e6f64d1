"""The service's settings: one typed dataclass, filled from the ``vislang serve`` options."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vislang.errors import VislangError

#: Environment variable holding the bearer token when ``--token`` is not given.
TOKEN_ENV = "VISLANG_SERVE_TOKEN"

#: Caption decoding when a request does not choose: beam 3 ranked by log p / length ** 1.5, the demo's
#: setting chosen on its validation split (see ``vislang.commands.demo``).
DEFAULT_BEAM, DEFAULT_LENGTH_PENALTY = 3, 1.5


@dataclass
class ServeConfig:
    """How the service batches, bounds and guards requests.

    Attributes:
        max_batch: Most requests to one model run as one batch.
        max_wait_ms: How long a model's worker waits after a request for others to join its batch.
        queue_size: Requests waiting per model before new ones get 503 with ``Retry-After``.
        timeout_s: Longest a request may wait for its answer (504 after).
        max_body_bytes: Largest request body (413 above).
        max_text_chars: Longest text field (422 above).
        max_k: Most search hits a request may ask for.
        token: Bearer token required on ``/v1/*`` and ``/metrics`` (None: no token).
        access_log: Print one line per request on stderr.
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    queue_size: int = 256
    timeout_s: float = 30.0
    max_body_bytes: int = 16 * 2**20
    max_text_chars: int = 1000
    max_k: int = 100
    token: str | None = None
    access_log: bool = True

    def __post_init__(self) -> None:
        checks = {"max_batch": self.max_batch >= 1, "max_wait_ms": self.max_wait_ms >= 0,
                  "queue_size": self.queue_size >= 1, "timeout_s": self.timeout_s > 0,
                  "max_body_bytes": self.max_body_bytes >= 1024, "max_text_chars": self.max_text_chars >= 1,
                  "max_k": self.max_k >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise VislangError(f"serve: {', '.join(bad)} out of range (batch, queue, k >= 1; wait >= 0 ms; "
                               "timeout > 0 s; body >= 1 KiB)")
        if self.token is not None and not self.token.strip():
            raise VislangError("serve: the token is empty")

    @classmethod
    def token_from_env(cls) -> str | None:
        """``$VISLANG_SERVE_TOKEN`` when set and not empty."""
        return os.environ.get(TOKEN_ENV) or None
