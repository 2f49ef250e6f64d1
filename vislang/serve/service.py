"""The models and the index a service answers with, loaded once at start, and what each task runs in a batch."""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vislang.errors import VislangError
from vislang.serve.errors import ApiError

#: The endpoints' tasks and the model tasks that serve them.
SERVED_TASKS = ("caption", "retrieval", "vqa", "classify", "generate")


@dataclass
class ServedModel:
    """One loaded model.

    Attributes:
        name: Its name in requests (the run or folder name, made unique).
        task: ``caption``, ``retrieval``, ``vqa``, ``classify`` or ``generate``.
        predictor: Its :mod:`vislang.inference` predictor.
        path: The run or model folder given.
        batcher: Its :class:`vislang.serve.batching.Batcher` (set when the app starts).
    """

    name: str
    task: str
    predictor: Any
    path: Path
    batcher: Any = None

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/models`` says of it: name, task, architecture, training step, metrics, summary."""
        cfg = self.predictor.config
        metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in (cfg.get("val_metrics") or {}).items()}
        step = cfg.get("step")
        summary = f"{cfg.get('model', '?')} for {self.task}" + (f", trained {step} steps" if step is not None else "")
        monitor = cfg.get("monitor")
        if monitor in metrics:  # the metric that chose the checkpoint first
            summary += f"; validation {monitor} {metrics[monitor]}"
        elif metrics:
            summary += "; validation " + ", ".join(f"{k} {v}" for k, v in list(metrics.items())[:3])
        return {"name": self.name, "task": self.task, "model": cfg.get("model"), "path": str(self.path),
                "step": step, "metrics": metrics, "summary": summary}

    def run(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        """One batch of the operation ``key[0]`` (see :data:`OPERATIONS`)."""
        return OPERATIONS[key[0]](self.predictor, key, items)


@dataclass
class Service:
    """The loaded models (in the order given) and the index.

    Attributes:
        models: Name -> model.
        index: The loaded :class:`vislang.index.Index`, or None.
        index_model: Name of the retrieval model that embedded the index (None without an index).
        index_path: The index directory.
    """

    models: dict[str, ServedModel]
    index: Any = None
    index_model: str | None = None
    index_path: Path | None = None

    def pick(self, task: str, name: str | None) -> ServedModel:
        """The model named ``name`` (it must serve ``task``), or the first of ``task``.

        Raises:
            ApiError: 404 ``unknown_model`` or ``no_model``; 422 when the named model is of another task.
        """
        if name:
            model = self.models.get(name)
            if model is None:
                raise ApiError(404, f"no model named {name!r} is loaded (loaded: {', '.join(self.models)})",
                               "unknown_model")
            if model.task != task:
                raise ApiError(422, f"model {name!r} is a {model.task} model, not {task}", "invalid_field")
            return model
        for model in self.models.values():
            if model.task == task:
                return model
        raise ApiError(404, f"no {task} model is loaded", "no_model")

    def image_path(self, item_id: str) -> Path | None:
        """The file of an item of the loaded image index (None: no image index, or no such item)."""
        if self.index is None or self.index.modality != "image" or item_id not in self.index:
            return None
        return Path(self.index.item(item_id)["path"])

    def defaults(self) -> set[str]:
        """The names of the first model of each task (the one used when a request names none)."""
        first: dict[str, str] = {}
        for m in self.models.values():
            first.setdefault(m.task, m.name)
        return set(first.values())


def load_service(paths: Sequence[str | os.PathLike], index: str | os.PathLike | None = None, *,
                 device: str = "auto", checkpoint: str = "best", runtime: str = "torch",
                 judge: str | os.PathLike | None = None) -> Service:
    """Load every run or model folder, and the index (with the model that embedded it).

    ``judge``: a retrieval run whose joint space chooses the captions of every retrieval-augmented captioner
    (:class:`~vislang.tasks.caption_judge.CaptionJudge`, at its default settings).

    ``runtime``: how the given folders run (:func:`vislang.load`: ``torch``, or ``onnx`` / ``torch-export`` for
    folders of ``vislang export``); an index's own run, loaded when none of them embedded it, runs eagerly.

    Raises:
        VislangError: A folder does not load, is of a task the service does not serve, or the index was
            embedded by none of the loaded retrieval models (and its own run cannot be loaded).
    """
    from vislang.inference import load

    models: dict[str, ServedModel] = {}
    for p in paths:
        predictor = load(p, checkpoint=checkpoint, device=device, runtime=runtime)
        task = predictor.task
        if task not in SERVED_TASKS:
            raise VislangError(f"{p}: a {task} model; vislang serve answers {', '.join(SERVED_TASKS)} models")
        name = _unique(_model_name(Path(p)), models)
        models[name] = ServedModel(name, task, predictor, Path(p))
    if not models and index is None:
        raise VislangError("serve: give at least one run or model folder")
    if judge is not None:
        _attach_judge(models, judge, device)
    service = Service(models)
    if index is not None:
        _attach_index(service, Path(index), device, checkpoint)
    return service


def _attach_judge(models: dict[str, ServedModel], judge: str | os.PathLike, device: str) -> None:
    from vislang.tasks.caption_judge import CaptionJudge

    judged = [m for m in models.values() if CaptionJudge.can_judge(getattr(m.predictor, "model", None))]
    if not judged:
        raise VislangError(f"--judge {judge}: none of the models is a retrieval-augmented captioner (caption_rag, "
                           "run eagerly) for it to judge")
    loaded = CaptionJudge.load(judge, device=device)
    for m in judged:
        m.predictor.judge = loaded


def _model_name(path: Path) -> str:
    """A run's name: the run directory's, not ``best`` or ``checkpoints``."""
    parts = [p for p in path.resolve().parts if p not in ("best", "last", "checkpoints")]
    return parts[-1] if parts else "model"


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name}-{n}", n + 1
    return out


def _attach_index(service: Service, directory: Path, device: str, checkpoint: str) -> None:
    from vislang.index import Index

    index = Index.load(directory)
    for m in service.models.values():
        if m.task == "retrieval" and m.predictor.model_id == index.model_id:
            break
    else:
        loaded = [f"{m.name} ({m.predictor.model_id})" for m in service.models.values() if m.task == "retrieval"]
        if loaded or not index.model_path:
            raise VislangError(f"{directory}: the index was embedded by model {index.model_id}"
                               f"{f' ({index.model_path})' if index.model_path else ''}, which is not loaded"
                               + (f"; loaded: {', '.join(loaded)}" if loaded else "; give its run too"))
        from vislang.inference import load

        predictor = load(index.model_path, checkpoint=checkpoint, device=device)
        if getattr(predictor, "model_id", None) != index.model_id:
            raise VislangError(f"{directory}: the index was embedded by model {index.model_id}, but its run "
                               f"{index.model_path} now holds {getattr(predictor, 'model_id', '?')}; rebuild the "
                               "index or give the run it was built with")
        name = _unique(_model_name(Path(index.model_path)), service.models)
        m = service.models[name] = ServedModel(name, "retrieval", predictor, Path(index.model_path))
    index.attach(m.predictor)
    service.index, service.index_model, service.index_path = index, m.name, directory


# ------------------------------------------------------------------------------------- batched operations
# Each takes (predictor, key, items) and returns one result per item; key[0] names the operation and the rest
# of the key holds its options (requests with equal keys share a batch).

def _caption(predictor: Any, key: tuple, items: Sequence[Any]) -> list[Any]:
    _, beam, length_penalty, max_len = key
    out: list[Any] = [None] * len(items)
    for i, cap in predictor.iter_captions(list(items), beam=beam, max_len=max_len, batch_size=len(items),
                                          length_penalty=length_penalty):
        out[i] = cap
    return out


def _embed_image(predictor: Any, key: tuple, items: Sequence[Any]) -> list[Any]:
    return list(predictor.embed_images(list(items), batch_size=len(items)))                 # (E,) each


def _embed_text(predictor: Any, key: tuple, items: Sequence[str]) -> list[Any]:
    return list(predictor.embed_texts(list(items), batch_size=len(items)))                  # (E,) each


def _match(predictor: Any, key: tuple, items: Sequence[Any]) -> list[Any]:
    """Items ``(images (N, 3, S, S), query (E,))``: the region maps ``(N, h, w)`` of each hit."""
    return [predictor.match_maps(images, query) for images, query in items]


def _ask(predictor: Any, key: tuple, items: Sequence[tuple[Any, str]]) -> list[Any]:
    out: list[Any] = []
    try:
        return predictor.ask_many([x for x, _ in items], [q for _, q in items], k=key[1])
    except VislangError:  # one bad question: answer the others
        for x, q in items:
            try:
                out.append(predictor.ask_many([x], [q], k=key[1])[0])
            except VislangError as e:
                out.append(ApiError(422, f"question: {e}", "invalid_field"))
        return out


def _classify(predictor: Any, key: tuple, items: Sequence[tuple[Any, str]]) -> list[Any]:
    return predictor.classify_many([x for x, _ in items], [t for _, t in items], k=key[1])


def _explain_classify(predictor: Any, key: tuple, items: Sequence[tuple[Any, str, str]]) -> list[Any]:
    return [predictor.explain(x, text, label) for x, text, label in items]


def _generate(predictor: Any, key: tuple, items: Sequence[str]) -> list[Any]:
    """Key ``("generate", n, guidance, steps, seed, sampler)``, items prompts: ``(n, 3, S, S)`` in [0, 1] each.

    Each request is its own :meth:`~vislang.inference.generate.GeneratePredictor.generate_tensor` call, the call
    ``GeneratePredictor.generate([prompt], n=n, seed=seed, ...)`` makes: drawn in one UNet batch with other
    prompts, its images would differ in the last bits (~1e-5, enough to flip a few 8-bit pixels), and a request
    must get the same PNGs whoever it was batched with.
    """
    _, n, guidance, steps, seed, sampler = key
    out: list[Any] = []
    for prompt in items:
        try:
            out.append(predictor.generate_tensor([prompt], n=n, guidance=guidance, steps=steps, seed=seed,
                                                 sampler=sampler))
        except VislangError as e:
            out.append(ApiError(422, str(e), "invalid_field"))
    return out


def _explain_generate(predictor: Any, key: tuple, items: Sequence[str]) -> list[Any]:
    """Key ``("explain_generate", guidance, steps, seed, sampler)``: a ``GenerationExplanation`` per prompt."""
    _, guidance, steps, seed, sampler = key
    return [predictor.explain(p, guidance=guidance, steps=steps, seed=seed, sampler=sampler) for p in items]


OPERATIONS = {"caption": _caption, "embed_image": _embed_image, "embed_text": _embed_text, "match": _match,
              "ask": _ask, "classify": _classify, "explain_classify": _explain_classify, "generate": _generate,
              "explain_generate": _explain_generate}
