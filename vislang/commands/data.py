"""``vislang data``: list, prepare, inspect, check and shard datasets."""

from __future__ import annotations

import argparse
import time

from vislang.data import get_dataset_info, list_datasets, load_dataset, prepare_dataset, read_summary
from vislang.data.registry import is_registered_spec, summarize
from vislang.utils.io import format_table

SUMMARY_COLUMNS = ("split", "images", "captions", "questions", "labels", "concepts")


def add_root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="data root (default: $VISLANG_DATA or the user cache dir)")


def add_file_args(p: argparse.ArgumentParser) -> None:
    """Options for datasets given as files (COCO / Karpathy / VQA JSON)."""
    p.add_argument("--image-root", help="folder image file names are relative to (default: the file's folder)")
    p.add_argument("--annotations", help="VQA annotations JSON (default: found beside the questions file)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, prepare, inspect and check datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    q = dsub.add_parser("list", help="list the built-in datasets")
    q.set_defaults(func=cmd_list)

    q = dsub.add_parser("prepare", help="build a dataset into the data root (idempotent)")
    q.add_argument("names", nargs="+", metavar="NAME", help="dataset name, e.g. emoji, tuxpaint, shapes:size=32")
    add_root_arg(q)
    q.add_argument("--force", action="store_true", help="rebuild even if already built")
    q.set_defaults(func=cmd_prepare)

    q = dsub.add_parser("info", help="counts per split for a dataset name or file")
    q.add_argument("dataset", help="dataset name or path of a manifest / COCO / Karpathy / VQA file")
    q.add_argument("--split", help="only this split (files without splits ignore it)")
    add_root_arg(q)
    add_file_args(q)
    q.set_defaults(func=cmd_info)

    q = dsub.add_parser("check", help="open every image of a dataset and report the bad ones together")
    q.add_argument("dataset", help="dataset name or path of a manifest / COCO / Karpathy / VQA file")
    q.add_argument("--split", help="split to check (default: all splits of a named dataset)")
    q.add_argument("--skip-bad", action="store_true", help="report bad images as a warning, exit 0")
    add_root_arg(q)
    add_file_args(q)
    q.set_defaults(func=cmd_check)

    q = dsub.add_parser("shard", help="write a dataset as WebDataset tar shards (image + JSON per sample)",
                        description="Write a dataset's records as WebDataset .tar shards (each sample: its image "
                                    "file and a JSON line with captions, label, questions, metadata and split); "
                                    "every --data then takes them as OUT/{000000..000NNN}.tar and trains from "
                                    "them streaming. Each split starts a new shard.")
    q.add_argument("dataset", help="dataset name or path of a manifest / COCO / Karpathy / VQA file")
    q.add_argument("-o", "--out", required=True, help="folder for the shards (must be empty or new)")
    q.add_argument("--split", action="append", metavar="SPLIT",
                   help="split to write (repeatable; default: every split of a named dataset)")
    q.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: 1000)")
    add_root_arg(q)
    add_file_args(q)
    q.set_defaults(func=cmd_shard)


def print_summary(name: str, root: str | None = None) -> None:
    """Print the counts table and licence of a built dataset."""
    s = read_summary(name, root)
    rows = [[r[c] for c in SUMMARY_COLUMNS] for r in s["splits"]]
    print(f"{name}  ({s['license']})")
    print(format_table(rows, SUMMARY_COLUMNS))


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_datasets():
        info = get_dataset_info(name)
        rows.append([name, ", ".join(info.splits), info.description])
    print(format_table(rows, ("name", "splits", "description")))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    for name in args.names:
        t0 = time.perf_counter()
        out = prepare_dataset(name, args.root, force=args.force)
        print(f"{name}: ready in {out} ({time.perf_counter() - t0:.1f} s)")
        print_summary(name, args.root)
    return 0


def _splits(args: argparse.Namespace) -> list[str | None]:
    if args.split or not is_registered_spec(args.dataset):
        return [args.split]
    return list(get_dataset_info(args.dataset.partition(":")[0]).splits)


def _load(args: argparse.Namespace, split: str | None):
    return load_dataset(args.dataset, split, root=args.root, image_root=args.image_root,
                        annotations=args.annotations)


def cmd_info(args: argparse.Namespace) -> int:
    if is_registered_spec(args.dataset) and not args.split:
        print_summary(args.dataset, args.root)
        return 0
    ds = _load(args, args.split)
    rows = summarize({ds.split or "all": ds.records})
    print(format_table([[r[c] for c in SUMMARY_COLUMNS] for r in rows], SUMMARY_COLUMNS))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    for split in _splits(args):
        ds = _load(args, split)
        ok = ds.check_images(skip_bad=args.skip_bad)
        print(f"{args.dataset}{f' [{split}]' if split else ''}: {len(ok)} of {len(ds)} records have readable images")
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    """Write the splits as shards and print the pattern that reads them."""
    from pathlib import Path

    from vislang.data.shards import write_shards
    from vislang.errors import DataError
    from vislang.utils.io import progress

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; choose another --out")
    splits = args.split or _splits(args)
    datasets = [_load(args, split).check_images() for split in splits]  # every problem before any writing
    records = []
    for ds in datasets:
        if ds.split is not None:  # kept in each sample's JSON: the shards hold every split, one per shard run
            for r in ds.records:
                r.meta.setdefault("split", ds.split)
        records.append(ds.records)
    written: list[Path] = []
    with progress(total=sum(len(r) for r in records), desc="sharding", unit="img") as bar:
        for ds, recs in zip(datasets, records):
            part = out / f".{len(written):06d}"  # a split's shards, then renamed into one numbered run
            for path in write_shards(recs, part, args.shard_size, to_png=_png_bytes, on_record=lambda: bar.update(1)):
                final = out / f"{len(written):06d}.tar"
                path.replace(final)
                written.append(final)
            part.rmdir()
            print(f"{args.dataset}{f' [{ds.split}]' if ds.split else ''}: {len(recs)} samples")
    if not written:
        raise DataError(f"{args.dataset}: no records to shard")
    pattern = out / (f"{{000000..{len(written) - 1:06d}}}.tar" if len(written) > 1 else "000000.tar")
    print(f"{len(written)} shards in {out}; read them with --data '{pattern}'")
    return 0


def _png_bytes(path: str) -> bytes:
    """An image file (an SVG drawing) rasterised and encoded as PNG."""
    import io

    from vislang.data.svg import rasterize_svg

    buf = io.BytesIO()
    rasterize_svg(path).save(buf, format="PNG")  # RGBA: transparency kept
    return buf.getvalue()
