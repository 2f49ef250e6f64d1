"""The built-in tasks: importing this module registers them (the task registry imports it on first use)."""

from vislang.tasks import (  # noqa: F401
    caption,
    classify,
    generate,
    regions,
    retrieval,
    vqa,
)
