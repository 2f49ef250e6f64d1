"""``vislang index build|info`` and ``vislang search``: vector indexes of images or texts, and searching them.

::

    vislang index build --model runs/retr --images photos/ -o runs/photos.index       # image items
    vislang index build --model runs/retr --data emoji --split test -o runs/emoji.index
    vislang index build --model runs/retr --texts captions.txt -o runs/captions.index # text items
    vislang search "a sleepy cat" --index runs/photos.index -k 5 --sheet cats.png      # text -> image
    vislang search --image q.png --index runs/photos.index                           # image -> image
    vislang search --image q.png --index runs/captions.index                         # image -> text
    vislang search --image q.png --texts captions.txt --model runs/retr              # rank a file's texts
    vislang search "a red circle" --index runs/photos.index --explain maps.png       # where each hit matches
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from vislang.errors import VislangError

KIND_FLAGS = {"nlist": "nlist", "nprobe": "nprobe", "hnsw_m": "m", "ef_construction": "ef_construction",
              "ef_search": "ef_search"}


def register(sub: argparse._SubParsersAction) -> None:
    from vislang.commands.explain import add_explain_option

    p = sub.add_parser("index", help="build and inspect vector indexes of images or texts (for `vislang search`)")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    q = isub.add_parser("build", help="embed images or texts with a trained model into an index directory")
    q.add_argument("--model", required=True, help="retrieval run directory (or one of its checkpoints)")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images (searched recursively)")
    src.add_argument("--data", metavar="NAME", help="images of a dataset name or manifest / COCO / Karpathy file")
    src.add_argument("--texts", metavar="FILE",
                     help="texts: a .txt file (one per line), or every caption of a manifest / dataset")
    q.add_argument("--split", help="split of --data / --texts (default: the dataset's default split)")
    q.add_argument("--root", help="data root for built-in datasets")
    q.add_argument("--image-root", help="folder that image names in a COCO / Karpathy file are relative to")
    q.add_argument("-o", "--out", required=True, metavar="INDEX", help="index directory to write")
    q.add_argument("--kind", choices=("flat", "ivf", "hnsw"),
                   help="flat: exact (default); ivf: clustered, approximate; hnsw: graph, approximate")
    q.add_argument("--nlist", type=int, help="ivf: number of clusters (default about 4·sqrt(N))")
    q.add_argument("--nprobe", type=int, help="ivf: clusters searched per query (default 8)")
    q.add_argument("--hnsw-m", type=int, help="hnsw: links per node (default 32)")
    q.add_argument("--ef-construction", type=int, help="hnsw: candidate list size while building (default 40)")
    q.add_argument("--ef-search", type=int, help="hnsw: candidate list size while searching (default 64)")
    q.add_argument("--add", action="store_true", help="add to the index in --out (same model required)")
    q.add_argument("--skip-existing", action="store_true", help="with --add: leave out ids already indexed")
    q.add_argument("--force", action="store_true", help="replace an existing index in --out")
    q.add_argument("--wait", nargs="?", type=float, const=True, default=False, metavar="SECONDS",
                   help="when another vislang process is writing --out, wait for it to finish (at most SECONDS "
                        "if given) instead of failing at once")
    q.add_argument("--skip-bad", action="store_true",
                   help="leave out missing or unreadable images with a warning instead of failing")
    q.add_argument("--batch-size", type=int, default=64, help="images embedded at once (default 64)")
    q.set_defaults(func=cmd_index_build)

    q = isub.add_parser("info", help="what an index holds: kind, modality, model, count")
    q.add_argument("index", help="index directory")
    q.set_defaults(func=cmd_index_info)

    p = sub.add_parser("search", help="search an index by text or by image")
    p.add_argument("query", nargs="?", help="text query (or give --image)")
    p.add_argument("--image", metavar="FILE",
                   help="image query (image -> image, or image -> text on a text index)")
    tgt = p.add_mutually_exclusive_group(required=True)
    tgt.add_argument("--index", help="index directory (from `vislang index build`)")
    tgt.add_argument("--texts", metavar="FILE",
                     help="rank the texts of a .txt file or manifest instead of an index (needs --model)")
    p.add_argument("-k", type=int, default=5, help="results to show (default 5)")
    p.add_argument("--model", help="run directory of the model (default: the one recorded in the index)")
    p.add_argument("--nprobe", type=int, help="ivf: clusters searched (default: the index's)")
    p.add_argument("--ef-search", type=int, help="hnsw: candidate list size (default: the index's)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--sheet", metavar="OUT.png", help="write a contact sheet of the query and the results")
    add_explain_option(p, "write where each image hit matches the query (or, for text hits, where the query "
                          "image matches each text): one heat map per hit, each map's mean its score")
    p.set_defaults(func=cmd_search)


# ---------------------------------------------------------------------------------------------- sources


def image_folder(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(paths, ids)`` of the image files under ``folder`` (recursive, sorted; ids are relative paths)."""
    from vislang.data.images import is_image_file

    root = Path(folder)
    if not root.is_dir():
        raise VislangError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p)
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise VislangError(f"{root}: no image files found (png, jpg, gif, webp, bmp, tif, svg)")
    return [str(p.resolve()) for p in files], [p.relative_to(root).as_posix() for p in files]


def text_items(spec: str, split: str | None = None, root: str | None = None, image_root: str | None = None,
               ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``(texts, ids, metadata)`` from a ``.txt`` file (one text a line, blank lines skipped; ids
    ``NAME:LINE``) or from every caption of a dataset or manifest (ids ``RECORD#N``, metadata names the
    record and its image)."""
    path = Path(spec)
    texts, ids, meta = [], [], []
    if path.suffix.lower() == ".txt":
        from vislang.data.text import read_texts

        for lineno, line in read_texts(path):
            texts.append(line)
            ids.append(f"{path.name}:{lineno}")
            meta.append({})
    else:
        from vislang.data import load_dataset

        ds = load_dataset(spec, split, root=root, image_root=image_root)
        for r in ds.records:
            for j, cap in enumerate(r.captions):
                texts.append(cap)
                ids.append(f"{r.id}#{j}")
                meta.append({"record": r.id, "image": r.image, **({"label": r.label} if r.label else {})})
    if not texts:
        raise VislangError(f"{spec}: no texts found (a .txt file needs non-empty lines; a dataset, captions)")
    return texts, ids, meta


def _record_metadata(r: Any, split: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.captions:
        out["captions"] = list(r.captions)
    if r.label is not None:
        out["label"] = r.label
    if split:
        out["split"] = split
    out.update({k: v for k, v in r.meta.items() if k not in out})
    return out


def _load_embedder(model: str | os.PathLike):
    from vislang.inference.retrieval import RetrievalPredictor

    return RetrievalPredictor.load(model)


# ----------------------------------------------------------------------------------------------- commands


def cmd_index_build(args: argparse.Namespace) -> int:
    """Build (or add to) an index; under torchrun each rank embeds its part and rank 0 writes the index."""
    from contextlib import nullcontext

    from vislang.train.runtime import resolve_device
    from vislang.utils.distributed import sharded_command
    from vislang.utils.lock import file_lock

    if not isinstance(args.wait, bool) and args.wait < 0:
        raise VislangError(f"--wait takes a number of seconds >= 0, got {args.wait}")
    # rank 0 holds the lock from before the index is read to after the new one is in place
    with sharded_command("index build", resolve_device("auto")) as env, \
            (file_lock(args.out, wait=args.wait) if env.is_main else nullcontext()):
        return _index_build(args, write=env.is_main)


def _index_build(args: argparse.Namespace, write: bool = True) -> int:
    from vislang.index import Index, VectorIndexError

    if args.batch_size < 1:
        raise VislangError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = Path(args.out)
    opts = {KIND_FLAGS[a]: getattr(args, a) for a in KIND_FLAGS if getattr(args, a) is not None}
    modality = "text" if args.texts else "image"
    exists = (out / "index.json").is_file()
    if exists and not (args.add or args.force):
        raise VislangError(f"{out}: an index is already there; pass --add to add to it or --force to replace it")
    if out.exists() and not exists and (not out.is_dir() or any(out.iterdir())):
        raise VislangError(f"{out}: exists and is not an index; choose another --out")
    if args.skip_existing and not args.add:
        raise VislangError("--skip-existing goes with --add")

    # the inputs first (their errors come before any model work), then the model and the index
    if args.texts:
        texts, ids, meta = text_items(args.texts, args.split, args.root, args.image_root)
    elif args.images:
        paths, ids = image_folder(args.images)
        meta, label = None, str(args.images)
    else:
        from vislang.data import load_dataset

        ds = load_dataset(args.data, args.split, root=args.root, image_root=args.image_root)
        if not ds.records:
            raise VislangError(f"{args.data}: no records")
        paths, ids = [r.image for r in ds.records], [r.id for r in ds.records]
        meta = [_record_metadata(r, ds.split) for r in ds.records]
        label = ds.name + (f" [{ds.split}]" if ds.split else "")
    if args.add and exists:
        index = Index.load(out)
        if index.modality != modality:
            raise VectorIndexError(f"{out}: this index holds {index.modality}s; cannot add {modality}s to it")
        if args.kind and args.kind != index.requested_kind:
            raise VislangError(f"{out}: the index is of kind {index.kind!r}; --kind {args.kind} does not apply "
                               "with --add")
        if opts:
            flags = ", ".join("--" + a.replace("_", "-") for a in KIND_FLAGS if getattr(args, a) is not None)
            print(f"note: {flags} ignored with --add: "
                  "the index keeps its options")
        index.attach(_load_embedder(args.model))
    else:
        embedder = _load_embedder(args.model)
        index = Index.create(embedder.model_id, embedder.dim, args.kind or "flat", modality=modality,
                             model_path=str(Path(args.model).resolve()), **opts)
        index.attach(embedder)
    before = len(index)

    if args.texts:
        report = index.add_texts(texts, ids, meta, skip_existing=args.skip_existing)
        unit = "texts"
    else:
        from vislang.errors import MissingImagesError

        try:
            report = index.add_images(paths, ids, meta, batch_size=args.batch_size, skip_bad=args.skip_bad,
                                      skip_existing=args.skip_existing, label=label)
        except MissingImagesError as e:  # also those whose pixel data broke while embedding: name the images
            raise MissingImagesError(label, e.bad, e.total) from None
        unit = "images"
    if write:  # under the lock: refuses an index another writer saved meanwhile
        index.save(out, overwrite=args.force)

    rate = report.added / report.seconds if report.seconds > 0 else 0.0
    kind = index.kind + (f" (asked for {index.requested_kind})" if index.kind != index.requested_kind else "")
    opts_s = ", ".join(f"{k}={v}" for k, v in index.options.items())
    print(f"index: {out}  kind: {kind}{f' [{opts_s}]' if opts_s else ''}  {index.modality} items, {index.dim}-d, "
          f"model {index.model_id} ({index.model_path})")
    skipped = []
    if report.bad:
        skipped.append(f"{len(report.bad)} unreadable")
    if report.skipped_existing:
        skipped.append(f"{len(report.skipped_existing)} already indexed")
    print(f"added {report.added} {unit} in {report.seconds:.1f} s ({rate:.1f}/s)"
          f"{'; skipped ' + ', '.join(skipped) if skipped else ''}; total {len(index)} (was {before})")
    return 0


def cmd_index_info(args: argparse.Namespace) -> int:
    from vislang.index import Index

    index = Index.load(args.index)
    info = index.info()
    for key in ("kind", "requested_kind", "options", "modality", "count", "dim", "model_id", "model"):
        print(f"{key:15s} {info[key]}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import sys

    from vislang.commands.explain import check_search_explain, explain_output, search_figure
    from vislang.data.images import load_image
    from vislang.data.text import knows_no_word
    from vislang.index import Index, build_text_index
    from vislang.utils.io import check_output_file, format_table
    from vislang.viz import save_contact_sheet, save_figure

    if (args.query is None) == (args.image is None):
        raise VislangError("give either a text query or --image FILE (not both)")
    if args.query is not None and not args.query.strip():
        raise VislangError("the text query is empty")
    if args.k < 1:
        raise VislangError(f"-k must be at least 1, got {args.k}")
    if args.sheet:
        check_output_file(args.sheet, "--sheet")
    figure, _ = explain_output(args)
    query_image = load_image(args.image) if args.image else None  # a bad file fails before any model work

    if args.index:
        index = Index.load(args.index)
        if figure:
            check_search_explain(index.modality, args.query)
        model = args.model or index.model_path
        if model is None:
            raise VislangError(f"{args.index}: the index records no model run; pass --model RUN")
        if not Path(model).exists():
            raise VislangError(f"{args.index}: the index's model run {model} does not exist (moved?); "
                               "pass --model RUN")
        index.attach(_load_embedder(model))
        source = args.index
    else:
        if not args.model:
            raise VislangError("--texts needs --model RUN (there is no index to take the model from)")
        if figure:
            check_search_explain("text", args.query)
        texts, ids, meta = text_items(args.texts)
        index = build_text_index(_load_embedder(args.model), texts, ids, meta, model_path=args.model)
        source = args.texts
    if args.nprobe is not None or args.ef_search is not None:
        index.set_search_options(nprobe=args.nprobe, ef_search=args.ef_search)

    tokenizer = getattr(index.embedder, "tokenizer", None)
    if args.query is not None and tokenizer is not None and knows_no_word(tokenizer, args.query):
        print(f"warning: no word of the query {args.query!r} is known to the model (all outside its vocabulary); "
              "the ranking below says nothing about it", file=sys.stderr)
    hits = index.search_text(args.query, args.k) if args.query is not None else index.search_image(query_image,
                                                                                                   args.k)
    if args.sheet:
        save_contact_sheet(args.sheet, hits, args.query if args.query is not None else Path(args.image))
    if figure:
        save_figure(search_figure(index.embedder, hits, index.modality, args.query, query_image), figure)
    if args.json:
        query = {"text": args.query} if args.query is not None else {"image": str(args.image)}
        print(json.dumps({"query": query, "index": str(source), "modality": index.modality, "kind": index.kind,
                          "hits": [h.to_dict() for h in hits]}, indent=1, ensure_ascii=False))
    else:
        last = "path" if index.modality == "image" else "text"
        rows = [[h.rank, h.score, h.id, h.path if index.modality == "image" else h.text] for h in hits]
        print(format_table(rows, ("rank", "score", "id", last)))
        if args.sheet:
            print(f"sheet: {args.sheet}")
        if figure:
            print(f"explain: {figure}")
    return 0
