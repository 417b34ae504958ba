"""The HTTP service: search by text or uploaded image, item metadata, thumbnails of
indexed items, health and statistics, and the web page at ``/``.

Safety by default: binds to 127.0.0.1 (see the CLI); uploads over ``max_upload_bytes``
get 413, a non-image upload 400, an over-long query 422, any URL with a path traversal
404; no endpoint writes to an index unless the server was started with writes enabled
and the request carries the token. Errors are JSON: ``{"error": "..."}``.
"""
import io
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from PIL import Image

from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from crossmodal.data.images import ImageTooLarge, max_pixels_default, open_cell, open_image
from crossmodal.errors import InvalidInput

from .batching import EmbedBatcher
from .index import MODALITIES, IndexChanges, write_index
from .ingest import text_items
from .duplicates import DEFAULT_MAX_LOOK_DISTANCE, DEFAULT_MIN_COSINE, default_radius, find_duplicates
from .filters import SORTS, ItemFilter
from .search import (DEFAULT_EXCLUDE_WEIGHT, DEFAULT_MIX, MAX_QUERY_CHARS, ResultForm, Searcher, check_query_texts,
                     compose_query, image_query_target)
from .store import display_text

WEB_DIR = Path(__file__).with_name("web")
TARGETS = (*MODALITIES, "moments")  #: what a query can look for: an index modality, or video moments
TARGET_PATTERN = "^(" + "|".join(TARGETS) + ")$"


class NewTexts(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=1000)


#: the service's ``rerank`` parameter, as its OpenAPI schema shows it
RERANK_HELP = "Hamming candidates re-ranked by the stored outputs (default: the index's own; 0: Hamming order)"
SORT_PATTERN = "^(" + "|".join(SORTS) + ")$"


class QueryForm:
    """The query forms every search endpoint takes (FastAPI reads them from the URL)."""

    def __init__(self, exclude: list[str] = Query([], alias="not", max_length=8,
                                                  description="push results away from these concepts"),
                 not_weight: float = Query(DEFAULT_EXCLUDE_WEIGHT, ge=0, le=4),
                 under: list[str] = Query([], max_length=16, description="only items inside these folders"),
                 after: str | None = Query(None, max_length=40, description="taken on or after (YYYY-MM-DD)"),
                 before: str | None = Query(None, max_length=40, description="taken before (YYYY-MM-DD)"),
                 sort: str = Query("relevance", pattern=SORT_PATTERN),
                 min_score: float | None = Query(None, ge=-1, le=1, description="cut-off on the re-ranked score")):
        self.exclude, self.not_weight = exclude, not_weight
        try:
            check_query_texts(exclude)
            self.form = ResultForm(ItemFilter.parse(under, after, before), sort, min_score)
        except InvalidInput as e:
            raise HTTPException(422, f"invalid request: {e}") from None


def _thumbnail_source(meta: dict, size: int, max_pixels: int) -> Image.Image:
    """The image behind an indexed item (a dataset row, an image file, or a video frame),
    decoded no larger than a thumbnail of ``size`` needs."""
    extra = meta.get("extra") or {}
    if meta["modality"] == "image" and "dataset" in extra:
        from datasets import Image as HFImage, load_from_disk

        ds = load_from_disk(str(Path(extra["dataset"]) / extra["split"])).cast_column("image", HFImage(decode=False))
        cell = ds[int(extra["row"])]["image"]
        return open_cell(cell, min_side=size, max_pixels=max_pixels)
    if meta["modality"] == "image":
        return open_image(meta["source"], min_side=size, max_pixels=max_pixels)
    if meta["modality"] == "frame":
        from crossmodal.video import frame_at

        return frame_at(meta["video"], meta["timestamp"])
    raise LookupError("this item has no image")


def create_app(searchers: "dict[int, Searcher]", allow_writes: bool = False, token: "str | None" = None,
               max_upload_bytes: int = 8 * 1024 * 1024, max_pixels: int | None = None, max_decodes: int = 2):
    """``max_pixels``: uploads announcing more pixels are refused (413) before decoding
    (default: the project's limit, 40 MP or ``CROSSMODAL_MAX_PIXELS``); ``max_decodes``:
    image decodes running at once, so simultaneous large uploads queue instead of
    multiplying peak memory."""
    if allow_writes and not token:
        raise InvalidInput("writes need a token: start the server with --write-token")
    bits_available = sorted(searchers)
    default_bits = bits_available[-1]
    # one batcher per model; the fingerprint hashes every weight, so it is computed once here, not per request
    fingerprints = {b: s.model.fingerprint() for b, s in searchers.items()}
    batchers: dict[str, EmbedBatcher] = {}
    for b, s in searchers.items():
        batchers.setdefault(fingerprints[b], EmbedBatcher(s.model))
    write_lock = threading.Lock()
    max_pixels = max_pixels or max_pixels_default()
    decode_slots = threading.BoundedSemaphore(max_decodes)
    thumbs: OrderedDict[int, bytes] = OrderedDict()

    app = FastAPI(title="crossmodal", version="0.1.0",
                  description="Cross-modal image-text retrieval with binary codes: search by text or image.")

    @app.middleware("http")
    async def no_traversal(request: Request, call_next):
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        if ".." in unquote(unquote(raw)) or "\\" in unquote(raw):
            return JSONResponse({"error": "not found"}, status_code=404)
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse({"error": exc.detail if isinstance(exc.detail, str) else str(exc.detail)},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {msgs}"}, status_code=422)

    def pick(bits: int | None) -> Searcher:
        b = bits or default_bits
        if b not in searchers:
            raise HTTPException(400, f"no index with {b}-bit codes; available: {bits_available}")
        searcher = searchers[b]
        searcher.refresh()  # serve what another writer (a command line) saved since the last request
        return searcher

    def run(searcher: Searcher, relaxed: np.ndarray, target: str, k: int, radius: int | None, rerank: int | None,
            query: QueryForm | None = None):
        if query is not None and query.exclude:
            batcher = batchers[fingerprints[searcher.index.nbits]]
            away = np.stack([batcher.embed_text(t) for t in query.exclude])
            relaxed = compose_query(relaxed, exclude=away, exclude_weight=query.not_weight)
        if target == "moments":
            from .video import moments_for_relaxed
            return [m.to_dict() for m in moments_for_relaxed(searcher, relaxed, top=k, radius=radius)]
        try:
            hits = searcher.search_relaxed(relaxed[None], target, k=k, radius=radius, rerank=rerank,
                                           form=query.form if query is not None else None)[0]
        except InvalidInput as e:
            raise HTTPException(422, f"invalid request: {e}") from None
        return [{**h.to_dict(), "id": str(h.id), "key": display_text(h.key), "source": display_text(h.source),
                 "video": display_text(h.video)} for h in hits]

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/stats")
    def stats():
        out = {"bits": bits_available, "default_bits": default_bits, "indexes": {}}
        for b, s in searchers.items():
            s.refresh()
            info = s.index.info()
            out["indexes"][str(b)] = {"counts": info["counts"], "index_type": info["index_type"],
                                      "model_fingerprint": info["model_fingerprint"]}
        out["writes_enabled"] = allow_writes
        out["batching"] = {fp: {"batches": b.batches_run, "items": b.items_run} for fp, b in batchers.items()}
        return out

    @app.get("/api/search/text")
    def search_text(q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS, description="the caption"),
                    target: str = Query("image", pattern=TARGET_PATTERN),
                    k: int = Query(12, ge=1, le=200), radius: int | None = Query(None, ge=0, le=128),
                    rerank: int | None = Query(None, ge=0, le=10000, description=RERANK_HELP),
                    bits: int | None = None, query: QueryForm = Depends()):
        try:
            check_query_texts([q])
        except InvalidInput as e:
            raise HTTPException(422, f"invalid request: q: {e}") from None
        s = pick(bits)
        relaxed = batchers[fingerprints[s.index.nbits]].embed_text(q)
        return {"query": q, "target": target, "bits": s.index.nbits, "sort": query.form.sort,
                "results": run(s, relaxed, target, k, radius, rerank, query)}

    @app.post("/api/search/image")
    def search_image(request: Request, file: UploadFile = File(...),
                     target: str | None = Query(None, pattern=TARGET_PATTERN,
                                                description="default: text, or image when the index has no texts"),
                     k: int = Query(12, ge=1, le=200), radius: int | None = Query(None, ge=0, le=128),
                     rerank: int | None = Query(None, ge=0, le=10000, description=RERANK_HELP),
                     bits: int | None = None, query: QueryForm = Depends(),
                     q: str | None = Query(None, max_length=MAX_QUERY_CHARS,
                                           description="a text to combine with the image: 'like this, but ...'"),
                     mix: float = Query(DEFAULT_MIX, ge=0, le=1, description="the image's share when q is given")):
        if q is not None and q.strip():
            try:
                check_query_texts([q])
            except InvalidInput as e:
                raise HTTPException(422, f"invalid request: q: {e}") from None
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        s = pick(bits)
        try:
            with decode_slots:
                img = open_image(data, min_side=s.model.image_encoder.image_size, max_pixels=max_pixels)
        except ImageTooLarge as e:
            raise HTTPException(413, f"{file.filename or 'upload'}: {e}") from None
        except Exception:
            raise HTTPException(400, f"{file.filename or 'upload'} is not an image Pillow can read") from None
        batcher = batchers[fingerprints[s.index.nbits]]
        relaxed = batcher.embed_image(img)
        if q is not None and q.strip():
            relaxed = compose_query(batcher.embed_text(q), relaxed, mix)
        target = target or image_query_target(s.index)
        return {"target": target, "bits": s.index.nbits, "sort": query.form.sort,
                "results": run(s, relaxed, target, k, radius, rerank, query)}

    @app.get("/api/folders")
    def folders(bits: int | None = None, limit: int = Query(200, ge=1, le=5000)):
        """Folders that hold indexed photos (or videos), with counts: the page's folder picker."""
        s = pick(bits)
        counts: dict[str, int] = {}
        for meta in s.index.items_of("image"):
            src = meta["source"]
            if src and src.startswith("/"):
                folder = display_text(src.rsplit("/", 1)[0])
                counts[folder] = counts.get(folder, 0) + 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return {"folders": [{"folder": f, "count": n} for f, n in sorted(top)]}

    @app.get("/api/duplicates")
    def duplicates(bits: int | None = None, radius: int | None = Query(None, ge=0, le=128),
                   min_cosine: float | None = Query(DEFAULT_MIN_COSINE, ge=-1, le=1),
                   max_look_distance: int = Query(DEFAULT_MAX_LOOK_DISTANCE, ge=0, le=64),
                   limit: int = Query(100, ge=1, le=1000)):
        """Groups of near-duplicate photos, largest first (``crossmodal duplicates``)."""
        s = pick(bits)
        try:
            groups = find_duplicates(s.index, "image", radius, min_cosine, max_look_distance)
        except InvalidInput as e:
            raise HTTPException(422, f"invalid request: {e}") from None
        return {"radius": default_radius(s.index.nbits) if radius is None else radius, "min_cosine": min_cosine,
                "max_look_distance": max_look_distance,
                "groups": [{**g.to_dict(), "keys": [display_text(k) for k in g.keys]} for g in groups[:limit]],
                "total_groups": len(groups)}

    def lookup(item_id: str) -> dict:
        try:
            iid = int(item_id)
        except ValueError:
            raise HTTPException(404, "no such item") from None
        if not 0 <= iid < 2 ** 63:  # ids are 63-bit; SQLite cannot even hold a larger one
            raise HTTPException(404, "no such item")
        for s in searchers.values():
            s.refresh()
            meta = s.index.item(iid)
            if meta:
                return meta
        raise HTTPException(404, "no such item")

    @app.get("/api/items/{item_id}")
    def item(item_id: str):
        meta = lookup(item_id)
        return {**meta, "id": str(meta["id"])}

    @app.get("/api/thumbnails/{item_id}")
    def thumbnail(item_id: str, size: int = Query(192, ge=16, le=512)):
        meta = lookup(item_id)
        key = (meta["id"], size)
        if key not in thumbs:
            try:
                with decode_slots:
                    img = _thumbnail_source(meta, size, max_pixels).convert("RGB")
            except LookupError:
                raise HTTPException(404, "this item has no image") from None
            except Exception:
                raise HTTPException(404, "the image of this item is no longer readable") from None
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            thumbs[key] = buf.getvalue()
            while len(thumbs) > 2048:
                thumbs.popitem(last=False)
        return Response(thumbs[key], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/index/texts")
    def add_texts(body: NewTexts, authorization: str | None = Header(None), bits: int | None = None):
        if not allow_writes:
            raise HTTPException(403, "this server is read-only (start it with --allow-writes and a token)")
        if authorization != f"Bearer {token}":
            raise HTTPException(401, "missing or wrong token")
        try:
            texts = check_query_texts(body.texts)
        except InvalidInput as e:
            raise HTTPException(422, f"invalid request: texts: {e}") from None
        s = pick(bits)
        changes = IndexChanges().add("text", text_items(texts), s.model.embed_texts(texts))
        if s.index_dir is None:  # an in-memory index (tests, embedding in an application)
            with write_lock:
                report = changes.apply_to(s.index, s.model)
        else:  # under the folder's writer lock, on its newest version; then serve that version
            report = write_index(s.index_dir, s.model, changes)
            s.refresh()
        return {"added": report.added, "skipped": report.skipped}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        files = {p.name: p for p in WEB_DIR.iterdir() if p.is_file()}
        if name not in files:
            raise HTTPException(404, "not found")
        return FileResponse(files[name])

    return app


def serve(index_dirs: list[str], model_dir: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          allow_writes: bool = False, token: str | None = None, max_upload_bytes: int = 8 * 1024 * 1024,
          max_pixels: int | None = None) -> None:
    import uvicorn

    searchers: dict[int, Searcher] = {}
    models: dict[str, object] = {}
    for d in index_dirs:
        s = Searcher.open(d, model_dir)
        s.model.build_deferred()  # a server answers both kinds of query: build both encoders now, not on a request
        fp = s.model.fingerprint()
        s.model = models.setdefault(fp, s.model)  # one model in memory per fingerprint
        if s.index.nbits in searchers:
            raise InvalidInput(f"two indexes with {s.index.nbits}-bit codes: {d}; serve one index per code length")
        searchers[s.index.nbits] = s
    app = create_app(searchers, allow_writes, token, max_upload_bytes, max_pixels)
    print(f"serving {', '.join(index_dirs)} on http://{host}:{port}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
