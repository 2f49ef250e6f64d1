"""``vislang serve``: trained models behind an HTTP API and a web page (FastAPI + uvicorn, the ``serve`` extra).

```python
from vislang.serve import ServeConfig, create_app, load_service

service = load_service(["runs/cap", "runs/retr"], index="runs/images.index")   # every model loaded once
app = create_app(service, ServeConfig(max_batch=16))                            # uvicorn.run(app, port=8000)
```

Modules: :mod:`~vislang.serve.config` (the settings), :mod:`~vislang.serve.service` (the loaded models and
index), :mod:`~vislang.serve.batching` (micro-batching), :mod:`~vislang.serve.requests` (reading fields and
images), :mod:`~vislang.serve.errors` (JSON errors), :mod:`~vislang.serve.observe` (metrics, access log),
:mod:`~vislang.serve.explain` (explanations as JSON), :mod:`~vislang.serve.app` (the routes). The web page is
``static/``. The API is described in ``docs/serve.md``.
"""

from vislang.serve.config import ServeConfig
from vislang.serve.service import Service, load_service


def create_app(service: Service, config: ServeConfig | None = None):
    """The FastAPI application serving ``service`` (imports FastAPI on first use)."""
    from vislang.serve.app import create_app as _create

    return _create(service, config or ServeConfig())


__all__ = ["ServeConfig", "Service", "create_app", "load_service"]
