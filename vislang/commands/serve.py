"""``vislang serve RUN_OR_FOLDER... [--index DIR]``: trained models behind an HTTP API and a web page."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve trained models over HTTP, with a web page (the 'serve' extra)",
                       description="Load trained runs or model folders (and an index) once, then answer HTTP "
                                   "requests: /v1/caption, /v1/search, /v1/embed, /v1/ask, /v1/classify, "
                                   "/v1/generate, the page at / and /metrics. The API is in docs/serve.md.")
    p.add_argument("models", nargs="*", metavar="RUN_OR_FOLDER", help="run directories or model folders")
    p.add_argument("--index", help="an index directory of `vislang index` (search; its model is loaded with it)")
    p.add_argument("--judge", metavar="RUN",
                   help="a retrieval run whose joint image-text space chooses the captions of the retrieval-augmented "
                        "captioners among their own and their nearest training images' (e.g. runs/demo/search)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=16, help="most requests to one model run as one batch (16)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests after its first (default 5 ms)")
    p.add_argument("--queue-size", type=int, default=256,
                   help="requests waiting per model before 503 with Retry-After (default 256)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="longest wait for an answer (default 30 s)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body (default 16 MB)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on /v1 and /metrics "
                                   "(default: $VISLANG_SERVE_TOKEN, else none)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--device", default="auto")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnx", "torch-export"),
                   help="torch: the eager models (default); onnx: folders of `vislang export --format onnx` on "
                        "ONNX Runtime (the 'onnx' extra); torch-export: folders of `--format torch-export`")
    p.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import sys

    from vislang.errors import VislangError
    from vislang.serve import ServeConfig, create_app, load_service

    if not 1 <= args.port <= 65535:
        raise VislangError(f"--port must be between 1 and 65535, got {args.port}")
    if not args.models and not args.index:
        raise VislangError("give at least one run or model folder, or --index")
    try:
        import uvicorn
    except ImportError:
        raise VislangError("vislang serve needs the serve extra: pip install 'vislang[serve]'") from None
    config = ServeConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                         timeout_s=args.timeout_s, max_body_bytes=int(args.max_body_mb * 2**20),
                         token=args.token if args.token is not None else ServeConfig.token_from_env(),
                         access_log=not args.no_access_log)
    service = load_service(args.models, args.index, device=args.device, checkpoint=args.checkpoint,
                           runtime=args.runtime, judge=args.judge)
    app = create_app(service, config)
    for m in service.models.values():
        print(f"loaded {m.name}: {m.describe()['summary']}", file=sys.stderr)
    if service.index is not None:
        print(f"index {service.index_path}: {len(service.index)} {service.index.modality}s, model {service.index_model}",
              file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: reachable from other machines"
              + ("" if config.token else " (no --token set)"), file=sys.stderr)
    print(f"serving on http://{args.host}:{args.port}/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
