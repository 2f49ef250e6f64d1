"""Exporting a model's graphs to ONNX (``torch.onnx.export(..., dynamo=True)``) or to ``torch.export``
programs (``.pt2``), each checked against the eager model at shapes other than the example's.

```python
from vislang.export import export_model
manifest = export_model(model, "out/", fmt="onnx", image_size=32)   # writes out/*.onnx and out/export.json
manifest["graphs"]["image"]["max_abs_diff"]                          # measured at batch 5, other lengths
```
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vislang.errors import VislangError, first_line
from vislang.export.graphs import BATCH, IMAGES, PREFIX, SEQ, GraphSpec, model_graphs
from vislang.inference.runtime import FORMATS, MANIFEST, open_graph

TOLERANCE = 1e-4
"""Largest absolute difference (fp32) between a graph's outputs and the eager model's that an export accepts."""

CHECK_SHAPES = ((5, 4), (5, 11))
"""``(batch, sequence length)`` the exported graphs are checked at (exported at batch 2, length 7)."""


def export_model(model: nn.Module, out: str | os.PathLike, *, fmt: str = "onnx", image_size: int = 32,
                 vocab_size: int | None = None, model_name: str | None = None,
                 tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export every graph of ``model`` (:func:`vislang.export.graphs.model_graphs`) into the folder ``out``
    and write its manifest ``export.json``.

    Args:
        model: The model (put in eval mode, on the CPU).
        out: The folder (created).
        fmt: ``onnx`` or ``torch-export``.
        image_size: The side of the images it takes (the model folder's preprocessing).
        vocab_size: Token ids of the example texts stay below it (default: the text tower's vocabulary).
        model_name: The model's registered name, for messages and the manifest.
        tolerance: Largest accepted absolute difference from the eager model at the check shapes.

    Returns:
        The manifest: format, graphs (file, inputs, outputs, dynamic axes, measured difference), versions.

    Raises:
        VislangError: An unknown format, a graph that does not export (naming the model part), or one whose
            outputs differ from the eager model's by more than ``tolerance``.
    """
    if fmt not in FORMATS:
        raise VislangError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    model = model.cpu().eval()
    name = model_name or type(model).__name__
    spec = model_graphs(model, image_size, vocab_size)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"format": fmt, "model": name, "torch": torch.__version__, "tolerance": tolerance,
                                "check_shapes": [list(s) for s in CHECK_SHAPES], "graphs": {}, "info": spec.info}
    for g in spec.graphs:
        entry = _export_graph(g, folder, fmt, name)
        entry["max_abs_diff"] = check_graph(g, folder, entry, fmt, tolerance, name)
        manifest["graphs"][g.name] = entry
    if fmt == "onnx":
        import onnx

        first = onnx.load(str(folder / next(iter(manifest["graphs"].values()))["file"]), load_external_data=False)
        manifest["opset"] = next(o.version for o in first.opset_import if o.domain in ("", "ai.onnx"))
        manifest["onnx"] = onnx.__version__
        manifest["onnxscript"] = _version("onnxscript")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _export_graph(g: GraphSpec, folder: Path, fmt: str, model_name: str) -> dict[str, Any]:
    """Export one graph; returns its manifest entry."""
    args = tuple(g.inputs.values())
    dynamic = {k: {axis: torch.export.Dim.AUTO for axis in axes} for k, axes in g.dynamic.items()}
    if g.name == "step":  # forward(prev, *state): the state's shapes are one tuple
        names = list(g.inputs)
        dynamic_shapes: Any = (dynamic.get(names[0]), tuple(dynamic.get(k) for k in names[1:]))
    else:
        dynamic_shapes = {k: dynamic.get(k) for k in g.inputs}
    file = f"{g.name}.onnx" if fmt == "onnx" else f"{g.name}.pt2"
    with _tracking(g.module) as where, _quiet():
        try:
            if fmt == "onnx":
                program = torch.onnx.export(g.module, args, dynamo=True, input_names=list(g.inputs),
                                            output_names=g.outputs, dynamic_shapes=dynamic_shapes,
                                            verbose=False, report=False)
                program.save(str(folder / file))
            else:
                program = torch.export.export(g.module, args, dynamic_shapes=dynamic_shapes, strict=False)
                torch.export.save(program, str(folder / file))
        except Exception as e:  # the exporter's own errors are long traces: one line naming the part
            part = where[-1] if where else g.what
            raise VislangError(f"{model_name}: the {g.name} graph does not export ({fmt}): {part} fails: "
                               f"{_described(e)}") from None
    axes = {k: {str(a): n for a, n in v.items()} for k, v in g.dynamic.items()}
    entry = {"file": file, "inputs": list(g.inputs), "outputs": list(g.outputs), "dynamic_axes": axes,
             "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in g.inputs.items()}}
    _check_dynamic(_input_shapes(folder / file, fmt, list(g.inputs)), g, model_name)
    return entry


def _input_shapes(path: Path, fmt: str, names: list[str]) -> dict[str, list[int | None]]:
    """The exported graph's input shapes: an int where an axis is fixed, None where it is symbolic."""
    if fmt == "onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                for i in graph.input}
    program = torch.export.load(str(path))
    user = [n for n in program.graph.nodes if n.op == "placeholder"][-len(names):]
    return {k: [s if isinstance(s, int) else None for s in n.meta["val"].shape] for k, n in zip(names, user)}


def _check_dynamic(shapes: dict[str, list[int | None]], g: GraphSpec, model_name: str) -> None:
    """Every axis meant to be dynamic is symbolic in the exported graph (not fixed at the example's size)."""
    for name, axes in g.dynamic.items():
        for axis, axis_name in axes.items():
            fixed = shapes.get(name, [None] * (axis + 1))[axis]
            if fixed is not None:
                raise VislangError(f"{model_name}: in the {g.name} graph, axis {axis} ({axis_name}) of {name!r} was "
                                   f"fixed to {fixed} while tracing {_culprit(g)}")


def _culprit(g: GraphSpec) -> str:
    """The part of the graph that fixes a length: an RNN (unrolled over the example's steps), else the graph's
    model part."""
    for qual, m in g.module.named_modules():
        if isinstance(m, nn.RNNBase):
            return (f"{qual.partition('.')[2]} ({type(m).__name__}; torch.export unrolls it over the example's "
                    "length, ONNX keeps it one op: use --format onnx)")
    return g.what


def check_graph(g: GraphSpec, folder: Path, entry: dict[str, Any], fmt: str, tolerance: float,
                model_name: str, shapes: tuple[tuple[int, int], ...] = CHECK_SHAPES) -> float:
    """The largest absolute difference between the exported graph and the eager module at ``shapes``
    (integer outputs must be equal).

    Raises:
        VislangError: It exceeds ``tolerance``, or the graph fails at those shapes.
    """
    run = open_graph(folder, entry, fmt)
    worst = 0.0
    for b, n in shapes:
        inputs = g.sample(b, n)
        with torch.no_grad():
            want = g.module(*inputs.values())
        try:
            got = run(*inputs.values())
        except Exception as e:
            raise VislangError(f"{model_name}: the exported {g.name} graph fails at batch {b}, length {n}: "
                               f"{_described(e)}") from None
        worst = max(worst, max_abs_diff(want, got, f"{model_name} {g.name}"))
    if worst > tolerance:
        raise VislangError(f"{model_name}: the exported {g.name} graph differs from the eager model by {worst:.3g} "
                           f"(> {tolerance:g})")
    return worst


def max_abs_diff(want: tuple[Tensor, ...], got: list[Tensor], what: str) -> float:
    """Largest absolute difference of two output lists (shapes must match, integer outputs be equal)."""
    worst = 0.0
    for i, (w, o) in enumerate(zip(want, got)):
        if tuple(w.shape) != tuple(o.shape):
            raise VislangError(f"{what}: output {i} has shape {tuple(o.shape)}, the eager model's {tuple(w.shape)}")
        if not w.is_floating_point():
            if not torch.equal(w, o.to(w.dtype)):
                raise VislangError(f"{what}: integer output {i} differs from the eager model's")
            continue
        if w.numel():
            worst = max(worst, float((w.float() - o.float()).abs().max()))
    return worst


@contextlib.contextmanager
def _tracking(module: nn.Module) -> Iterator[list[str]]:
    """The stack of the submodules being run (their qualified names and classes), for naming the one that
    fails while the exporter traces."""
    stack: list[str] = []
    handles = []
    for qual, m in module.named_modules():
        if not qual:
            continue
        inner = qual.partition(".")[2]             # the path inside the model (the wrapper's own name dropped)
        label = f"{inner} ({type(m).__name__})" if inner else type(m).__name__
        handles.append(m.register_forward_pre_hook(lambda *_, label=label: _push(stack, label)))
        handles.append(m.register_forward_hook(lambda *_: _pop(stack)))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def _push(stack: list[str], label: str) -> None:
    stack.append(label)


def _pop(stack: list[str]) -> None:
    """Drop the module that returned (a hook returning None leaves its output alone)."""
    if stack:
        stack.pop()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings, log lines and progress prints silenced."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                                               "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _described(e: BaseException) -> str:
    """``Type: first line`` of an exception's cause (of the exception when the cause says nothing), at most 300
    characters: the exporters wrap the layer's own error in theirs."""
    err = next((x for x in (e.__cause__, e) if x is not None and str(x).strip()), e)
    text = f"{type(err).__name__}: {first_line(err)}"
    return text if len(text) <= 300 else text[:297] + "..."


__all__ = ["BATCH", "CHECK_SHAPES", "IMAGES", "PREFIX", "SEQ", "TOLERANCE", "check_graph", "export_model",
           "max_abs_diff"]
