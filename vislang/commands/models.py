"""``vislang models [PATTERN]``: the registered models, their families and descriptions; the weights shipped
with vislang (``--pretrained``), a run's image encoder saved as a weights file (``--save-image-encoder``),
and several retrieval runs saved as one ensemble model folder (``--ensemble RUN RUN ... --out DIR``)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models (image encoders, captioners, ...)")
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. '*tiny*' or 'caption_*'")
    p.add_argument("--pretrained", action="store_true",
                   help="list the weights shipped with vislang (load with encoder_kwargs.pretrained=NAME)")
    p.add_argument("--save-image-encoder", nargs=2, metavar=("RUN", "FILE"),
                   help="write the image encoder of a trained run (its best model) to a .safetensors file")
    p.add_argument("--ensemble", nargs="+", metavar="RUN",
                   help="save the best models of two or more retrieval runs (or checkpoint folders, e.g. "
                        "RUN/checkpoints/last) as one model folder (--out) whose similarities are the mean of "
                        "theirs; validated on the first run's validation data")
    p.add_argument("--out", help="model folder --ensemble writes")
    p.add_argument("--no-validate", action="store_true",
                   help="--ensemble: skip validating the ensemble on the first run's validation data")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from vislang.errors import VislangError
    from vislang.models.registry import describe_model, list_models, model_family
    from vislang.utils.io import format_table

    if args.out and not args.ensemble:
        raise VislangError("--out is the folder --ensemble writes; give --ensemble RUN RUN ... with it")
    if args.ensemble:
        from vislang.tasks.retrieval_ensemble import ensemble_retrievers

        if not args.out:
            raise VislangError("--ensemble needs --out DIR, the model folder to write")
        out = ensemble_retrievers(args.ensemble, args.out, validate=not args.no_validate)
        print(f"{out}: an ensemble of {len(args.ensemble)} retrieval models "
              f"(load it, evaluate it or serve it like any retrieval run)")
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        members = ", ".join(f"{m['best_metric']:.4f}" if isinstance(m.get("best_metric"), float) else "?"
                            for m in config["members"])
        if config.get("best_metric") is not None:
            print(f"validation {config['monitor']}: {config['best_metric']:.4f} (members: {members})")
        return 0
    if args.save_image_encoder:
        from pathlib import Path

        from vislang.models.encoders import save_weights
        from vislang.tasks import load_trained

        run, out = args.save_image_encoder
        trained = load_trained(run)
        encoder = getattr(trained.model, "image_encoder", None)
        if encoder is None:
            raise VislangError(f"{run}: its model ({type(trained.model).__name__}) has no image encoder")
        save_weights(encoder, Path(out))
        print(f"{out}: the image encoder of {trained.folder} ({sum(p.numel() for p in encoder.parameters()):,} "
              "parameters)")
        return 0
    if args.pretrained:
        from vislang.models.encoders import PRETRAINED_DIR, list_pretrained

        rows = []
        for name in list_pretrained():
            card = PRETRAINED_DIR / f"{name}.md"
            lines = card.read_text(encoding="utf-8").splitlines() if card.exists() else []
            title = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("# ")), "-")
            rows.append([name, title])
        print(format_table(rows, ("name", "model card")))
        return 0
    rows = [[n, model_family(n) or "-", describe_model(n)] for n in list_models(args.pattern)]
    print(format_table(rows, ("name", "family", "description")))
    return 0
