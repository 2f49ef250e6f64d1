"""The FastAPI application: health, models, the six predicting endpoints, indexed images, metrics and the page.

See ``docs/serve.md`` for the API. Every model runs behind its :class:`~vislang.serve.batching.Batcher`;
image decoding and drawing run on threads; errors are JSON (:mod:`vislang.serve.errors`).
"""

from __future__ import annotations

import contextlib
import hmac
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from vislang.errors import VislangError
from vislang.serve.batching import Batcher
from vislang.serve.config import DEFAULT_BEAM, DEFAULT_LENGTH_PENALTY, ServeConfig
from vislang.serve.errors import ApiError, install_handlers
from vislang.serve.explain import caption_explanation, data_url, grid_list, heatmap_explanation
from vislang.serve.observe import Metrics, ObserveMiddleware, setup_access_log
from vislang.serve.requests import Fields, decode_image, read_fields
from vislang.serve.service import ServedModel, Service

STATIC = Path(__file__).parent / "static"

#: ``/v1/generate``: images per request, sampler steps and seeds allowed (the defaults are 4, 50 and 0).
MAX_IMAGES, MAX_STEPS, MAX_SEED = 16, 200, 2**31 - 1


def _body(**fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of an endpoint taking ``fields`` as a form (image as a file) or as JSON."""
    form = {k: ({"type": "string", "format": "binary"} if k == "image" else v) for k, v in fields.items()}
    json_props = {("image_base64" if k == "image" else k): ({"type": "string", "format": "byte"} if k == "image"
                                                            else v) for k, v in fields.items()}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": form}},
        "application/json": {"schema": {"type": "object", "properties": json_props}}}}}


_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_IMAGE = {"type": "string", "format": "binary"}


def create_app(service: Service, config: ServeConfig) -> Any:
    """The application answering with ``service``'s models; their batchers start and stop with it."""
    from vislang import __version__

    metrics = Metrics()
    ready = {"ok": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        for m in service.models.values():
            m.batcher = Batcher(m.name, m.run, max_batch=config.max_batch, max_wait_ms=config.max_wait_ms,
                                queue_size=config.queue_size,
                                on_batch=lambda key, n, name=m.name: metrics.batch_size.labels(name, key[0]).observe(n))
            m.batcher.start()
        ready["ok"] = True
        try:
            yield
        finally:
            ready["ok"] = False
            for m in service.models.values():
                await m.batcher.stop()

    app = FastAPI(title="vislang", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Captioning, search, embeddings, VQA, classification and text-to-image generation "
                              "with trained vislang models.")
    install_handlers(app)
    if config.access_log:
        setup_access_log()
    app.add_middleware(ObserveMiddleware, metrics=metrics, log=config.access_log)

    def auth(request: Request) -> None:
        if config.token is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {config.token}".encode()):
            raise ApiError(401, "missing or wrong bearer token: send the header 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]

    async def fields_of(request: Request) -> Fields:
        return await read_fields(request, config.max_body_bytes, config.max_text_chars)

    async def image_of(fields: Fields, model: ServedModel) -> tuple[Any, Any]:
        """The request's image decoded (PIL, for drawing) and preprocessed for ``model`` ((3, S, S))."""
        data = fields.require_image()

        def work() -> tuple[Any, Any]:
            image = decode_image(data, model.predictor.decode_side)
            return image, model.predictor.preprocess(image)

        return await run_in_threadpool(work)

    def model_name(fields: Fields) -> str | None:
        return fields.text("model", required=False, allow_empty=True) or None

    async def run(model: ServedModel, key: tuple, item: Any) -> Any:
        return await model.batcher.submit(key, item, config.timeout_s)

    # ------------------------------------------------------------------------------------------ service state
    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"])
    async def readyz() -> Any:
        if not ready["ok"]:
            return JSONResponse({"error": {"code": "not_ready", "message": "models are loading"}}, status_code=503)
        return {"status": "ready", "models": len(service.models)}

    @app.get("/v1/models", tags=["service"], dependencies=guarded)
    async def models() -> dict[str, Any]:
        defaults = service.defaults()
        index = None
        if service.index is not None:
            index = {"size": len(service.index), "modality": service.index.modality, "model": service.index_model,
                     "kind": service.index.kind}
        return {"models": [{**m.describe(), "default": m.name in defaults} for m in service.models.values()],
                "index": index}

    @app.get("/metrics", tags=["service"], dependencies=guarded)
    async def prometheus() -> Response:
        for m in service.models.values():
            metrics.queue_depth.labels(m.name).set(m.batcher.depth if m.batcher is not None else 0)
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    # ------------------------------------------------------------------------------------------- predicting
    @app.post("/v1/caption", tags=["predict"], dependencies=guarded,
              openapi_extra=_body(image=_IMAGE, beam=_INT, length_penalty=_NUM, max_len=_INT, model=_STR,
                                  explain=_BOOL))
    async def caption(request: Request) -> dict[str, Any]:
        f = await fields_of(request)
        m = service.pick("caption", model_name(f))
        key = ("caption", f.number("beam", DEFAULT_BEAM, 1, 10),
               f.number("length_penalty", DEFAULT_LENGTH_PENALTY, 0, 2, integer=False),
               f.number("max_len", m.predictor.max_len, 1, 100))
        explain = f.flag("explain")
        image, x = await image_of(f, m)
        cap = await run(m, key, x)
        out = {"model": m.name, "caption": cap.text, "words": cap.words, "score": round(cap.score, 4)}
        if explain:
            if cap.attention is None:
                raise ApiError(422, f"model {m.name} has no attention to show", "no_attention")
            out["explanation"] = await run_in_threadpool(caption_explanation, image, cap)
        return out

    @app.post("/v1/search", tags=["predict"], dependencies=guarded,
              openapi_extra=_body(text=_STR, image=_IMAGE, k=_INT, model=_STR, explain=_BOOL))
    async def search(request: Request) -> dict[str, Any]:
        f = await fields_of(request)
        if service.index is None:
            raise ApiError(404, "no index is loaded: start vislang serve with --index DIR", "no_index")
        m = service.models[service.index_model]
        name = model_name(f)
        if name and service.pick("retrieval", name).name != m.name:
            raise ApiError(422, f"the index was embedded by model {m.name}, not {name}", "invalid_field")
        k = f.number("k", 10, 1, config.max_k)
        explain = f.flag("explain")
        if explain and service.index.modality != "image":
            raise ApiError(422, "explanations need an image index (this one holds texts)", "invalid_field")
        query, _ = await _query(f, m)
        hits = (await run_in_threadpool(service.index.search_vectors, query[None].numpy(), k))[0]
        out = [{**h.to_dict(), "thumbnail": f"/v1/images/{quote(h.id, safe='')}" if h.path else None}
               for h in hits]
        for o in out:
            o.pop("path", None)  # the server's file layout stays private
        if explain and hits:
            await _explain_hits(m, query, hits, out)
        return {"model": m.name, "query": {"text": f.values["text"].strip()} if f.image is None else {"image": True},
                "hits": out}

    async def _explain_hits(m: ServedModel, query: Any, hits: list[Any], out: list[dict[str, Any]]) -> None:
        """Each hit's match map (``explanation``; None for an indexed image no longer readable)."""
        import torch

        from vislang.data.images import load_image
        from vislang.errors import ImageError

        def decode(path: str) -> Any:
            try:
                image = load_image(path, min_side=m.predictor.decode_side)
            except ImageError:
                return None
            return image, m.predictor.preprocess(image)

        decoded = await run_in_threadpool(lambda: [decode(h.path) for h in hits])
        ok = [i for i, d in enumerate(decoded) if d is not None]
        images = [d[0] if d is not None else None for d in decoded]
        for o in out:
            o["explanation"] = None
        if not ok:
            return
        xs = torch.stack([decoded[i][1] for i in ok])                                 # (N, 3, S, S)
        maps = await run(m, ("match",), (xs, query))                                  # (N, h, w)
        for i, heat in zip(ok, maps):
            out[i]["explanation"] = await run_in_threadpool(
                heatmap_explanation, images[i], heat, f"{out[i]['id']}: {out[i]['score']:.3f}", "match")

    async def _query(f: Fields, m: ServedModel) -> tuple[Any, str]:
        has_text, has_image = f.values.get("text") is not None, f.image is not None
        if has_text == has_image:
            raise ApiError(400, "send either the field 'text' or an image (not both)")
        if has_text:
            return await run(m, ("embed_text",), f.text("text")), "text"
        _, x = await image_of(f, m)
        return await run(m, ("embed_image",), x), "image"

    @app.post("/v1/embed", tags=["predict"], dependencies=guarded,
              openapi_extra=_body(text=_STR, image=_IMAGE, model=_STR))
    async def embed(request: Request) -> dict[str, Any]:
        f = await fields_of(request)
        m = service.pick("retrieval", model_name(f) or service.index_model)
        vec, modality = await _query(f, m)
        return {"model": m.name, "modality": modality, "dim": int(vec.shape[0]),
                "embedding": [round(float(v), 6) for v in vec.tolist()]}

    @app.post("/v1/ask", tags=["predict"], dependencies=guarded,
              openapi_extra=_body(image=_IMAGE, question=_STR, k=_INT, model=_STR, explain=_BOOL))
    async def ask(request: Request) -> dict[str, Any]:
        f = await fields_of(request)
        m = service.pick("vqa", model_name(f))
        question, k, explain = f.text("question"), f.number("k", 5, 1, 20), f.flag("explain")
        image, x = await image_of(f, m)
        answer = await run(m, ("ask", k), (x, question))
        out = {"model": m.name, **answer.to_json()}
        if explain:
            if answer.attention is None:
                raise ApiError(422, f"model {m.name} fuses late: it has no attention over the image to show",
                               "no_attention")
            out["explanation"] = await run_in_threadpool(
                heatmap_explanation, image, answer.attention, f"{question} -> {answer.answer}", "attention")
        return out

    @app.post("/v1/classify", tags=["predict"], dependencies=guarded,
              openapi_extra=_body(image=_IMAGE, text=_STR, k=_INT, model=_STR, explain=_BOOL))
    async def classify(request: Request) -> dict[str, Any]:
        f = await fields_of(request)
        m = service.pick("classify", model_name(f))
        text = f.text("text", required=False, allow_empty=True) or ""
        k, explain = f.number("k", 5, 1, 20), f.flag("explain")
        image, x = await image_of(f, m)
        top, seen = await run(m, ("classify", k), (x, text))
        out = {"model": m.name, "label": top[0][0], "confidence": round(top[0][1], 4),
               "top": [{"label": c, "p": round(p, 4)} for c, p in top], "text_seen": seen}
        if explain:
            ex = await run(m, ("explain_classify",), (x, text, top[0][0]))
            weights = {name: round(float(v), 4) for name, v in ex.modality_weights.items()}
            title = f"{ex.label}: image {weights.get('image', 0):.2f}, text {weights.get('text', 0):.2f}"
            out["explanation"] = await run_in_threadpool(heatmap_explanation, image, ex.attention, title, "evidence",
                                                         modality_weights=weights, method=ex.method)
        return out

    @app.post("/v1/generate", tags=["predict"], dependencies=guarded,
              openapi_extra=_body(prompt=_STR, n=_INT, guidance=_NUM, steps=_INT, seed=_INT,
                                  sampler={"type": "string", "enum": ["ddim", "dpm"]}, model=_STR, explain=_BOOL))
    async def generate(request: Request) -> dict[str, Any]:
        from vislang.models.diffusion_unet import SAMPLERS

        f = await fields_of(request)
        m = service.pick("generate", model_name(f))
        prompt = f.prompt()
        n, guidance = f.number("n", 4, 1, MAX_IMAGES), f.number("guidance", 3.0, 0, 50, integer=False)
        steps, seed = f.number("steps", 50, 1, MAX_STEPS), f.number("seed", 0, 0, MAX_SEED)
        sampler, explain = f.choice("sampler", SAMPLERS, "ddim"), f.flag("explain")
        try:
            warnings = [w for w in m.predictor.check_prompts([prompt]) if w]
        except VislangError as e:  # an empty prompt: the predictor's message
            raise ApiError(422, str(e), "invalid_field") from None
        images = await run(m, ("generate", n, guidance, steps, seed, sampler), prompt)         # (n, 3, S, S)
        out = {"model": m.name, "prompt": prompt, "size": int(images.shape[-1]),
               "options": {"n": n, "guidance": guidance, "steps": steps, "seed": seed, "sampler": sampler},
               "images": await run_in_threadpool(_image_urls, images, seed), "warnings": warnings}
        if explain:
            ex = await run(m, ("explain_generate", guidance, steps, seed, sampler), prompt)
            out["explanation"] = await run_in_threadpool(_generation_explanation, ex, seed)
        return out

    # ------------------------------------------------------------------------------------ images and the page
    @app.get("/v1/images/{item_id:path}", tags=["service"], dependencies=guarded)
    async def indexed_image(item_id: str) -> Any:
        path = service.image_path(item_id)
        if path is None:
            raise ApiError(404, f"no image {item_id!r} in the loaded index", "not_found")
        if not path.is_file():
            raise ApiError(404, f"image {item_id!r} of the index is no longer on disk", "not_found")
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        index_html = STATIC / "index.html"
        if not index_html.is_file():
            raise ApiError(404, "the web page is not installed (vislang/serve/static/index.html)", "not_found")
        return FileResponse(index_html, media_type="text/html")

    return app


def _image_urls(images: Any, seed: int) -> list[dict[str, Any]]:
    """Generated images ``(n, 3, S, S)`` in [0, 1] as ``[{"seed", "png"}]``, ``png`` a ``data:`` URL."""
    from vislang.inference.generate import to_pil
    from vislang.viz import png_bytes

    return [{"seed": seed + j, "png": data_url(png_bytes(to_pil(x)))} for j, x in enumerate(images)]


def _generation_explanation(ex: Any, seed: int) -> dict[str, Any]:
    """A ``GenerationExplanation`` as JSON: per token its cross-attention map ``(h, w)`` (each summing to 1) and
    share of the attention, the image of ``seed`` drawn alone, and the figure of the maps over it (the one
    ``vislang generate --explain`` draws)."""
    from vislang.viz import png_bytes
    from vislang.viz.token_maps import token_maps_figure

    _, h, w = ex.maps.shape                                                          # (T, h, w)
    title = f"{ex.prompt}  (seed {seed}; per token: share of the attention, peak over uniform)"
    strip = token_maps_figure(ex.image, ex.tokens, ex.maps, ex.weights, title)
    return {"kind": "cross_attention", "grid": [h, w], "seed": seed, "tokens": ex.tokens,
            "weights": [round(float(v), 4) for v in ex.weights], "maps": [grid_list(m, 6) for m in ex.maps],
            "image": data_url(png_bytes(ex.image)), "png": data_url(png_bytes(strip))}
