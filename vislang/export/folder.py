"""``vislang export``: a trained model folder -> a folder usable on its own with ONNX Runtime (or
``torch.export``): the graphs, ``export.json``, and the model folder's config, preprocessing, tokenizer files
and card (not its weights)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from vislang.errors import VislangError
from vislang.export.exporter import TOLERANCE, export_model
from vislang.inference.exported import TOKENIZER_FILE
from vislang.inference.runtime import MANIFEST
from vislang.tasks.base import load_trained
from vislang.utils.folder import WEIGHTS_DIGEST, WEIGHTS_FILE, sha256_file
from vislang.utils.io import atomic_dir

SKIPPED = {WEIGHTS_FILE, "train_state.pt"}
"""Files of the model folder not copied (the weights live in the graphs)."""


def export_folder(path: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "onnx", checkpoint: str = "best",
                  tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export the model of a run directory or model folder into ``out``; returns the manifest.

    Raises:
        VislangError: Not a model folder, ``out`` a non-empty folder that is not an export, a graph that does not
            export (naming the model part), or outputs beyond ``tolerance`` of the eager model's.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise VislangError(f"{out}: exists and is not an empty folder or an earlier export; choose another -o")
    trained = load_trained(path, which=checkpoint, device="cpu")
    name = trained.config["model"]
    with atomic_dir(out) as tmp:  # an earlier export in ``out`` stays whole until the new one is complete
        manifest = export_model(trained.model, tmp, fmt=fmt, image_size=trained.transform_cfg.image_size,
                                model_name=name, tolerance=tolerance)
        for f in sorted(trained.folder.iterdir()):
            if f.is_file() and f.name not in SKIPPED:
                shutil.copy2(f, tmp / f.name)
        config = json.loads((tmp / "config.json").read_text())
        if not config.get(WEIGHTS_DIGEST) and (trained.folder / WEIGHTS_FILE).is_file():
            config[WEIGHTS_DIGEST] = sha256_file(trained.folder / WEIGHTS_FILE)   # the model's id (saved indexes)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer = getattr(trained.artifacts, "tokenizer", trained.artifacts)
        source = getattr(tokenizer, "path", None)
        if config.get("tokenizer") == "text_encoder" and source and Path(source).is_file():
            shutil.copy2(source, tmp / TOKENIZER_FILE)
        manifest.update(task=trained.config.get("task"), source=str(trained.folder))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _add_to_card(tmp, manifest)
    return manifest


def _add_to_card(out: Path, manifest: dict[str, Any]) -> None:
    card = out / "README.md"
    if not card.is_file():
        return
    rows = "\n".join(f"| {g} | `{e['file']}` | {', '.join(e['inputs'])} | {', '.join(e['outputs'])} | "
                     f"{e['max_abs_diff']:.1e} |" for g, e in manifest["graphs"].items())
    card.write_text(card.read_text().rstrip() + f"""

## Exported ({manifest['format']})

Exported by `vislang export` with torch {manifest['torch']}; load it with
`vislang.load("<this folder>", runtime="{manifest['format']}")`. This folder holds no `model.safetensors`: the weights are
in the graphs. Each graph was checked against the eager model at batch 5 and other text lengths than the
export's (largest absolute difference, fp32; accepted up to {manifest['tolerance']:.0e}):

| graph | file | inputs | outputs | max abs diff |
|---|---|---|---|---|
{rows}
""")
