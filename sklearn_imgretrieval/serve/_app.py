"""The ASGI app: one web page and a JSON API over an image index (Starlette).

The index is loaded by :func:`create_app`, before any server starts, so a
bad file is reported at once. The network's first forward pass (seconds:
Keras builds its compiled function) runs in the background once the app
starts; until it is done, searches by upload answer 503 with
``Retry-After`` while everything that needs no network (the page, the
statistics, thumbnails, neighbours of indexed images) answers at once.
Work that takes CPU runs on a thread pool of one thread per core, never on
the event loop, so slow requests do not stall the others.
"""

import base64
import contextlib
import hashlib
import inspect
import os
import re
from importlib import resources

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .._parallel import local_threads
from ._searcher import IndexSearcher, ServerStopping, UnreadableImage
from ._uploads import FIELD, read_uploaded_file

__all__ = ["create_app"]

#: Host names a server bound to the loopback interface answers to; others are
#: refused, so that a web page cannot reach it through DNS rebinding.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
#: Seconds a client is told to wait while the network warms up.
RETRY_AFTER_SECONDS = 2


def _page():
    """The web page and its Content-Security-Policy: only its own inline script
    and style (by hash) run, and it talks to this server only."""
    html = resources.files(__package__).joinpath("_static", "index.html").read_text(encoding="utf-8")

    def digests(tag):
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
            for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        )

    policy = (
        f"default-src 'none'; script-src {digests('script')}; style-src {digests('style')}; "
        "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    return html, headers


def _first_line(function):
    return inspect.getdoc(function).splitlines()[0]


def create_app(
    index,
    *,
    default_k=10,
    max_k=100,
    max_upload_bytes=20 * 2**20,
    embed_batch_size=1,
    n_threads=None,
    allowed_hosts=LOOPBACK_HOSTS,
    max_image_pixels=50_000_000,
    thumbnail_size=192,
    thumbnail_cache_size=2048,
):
    """The search web page and JSON API over an image index, as an ASGI app.

    Serve it with uvicorn (``imgretrieval serve`` does), or test it with
    Starlette's ``TestClient`` without a socket. Use the client as a context
    manager so that the app's start-up (the network's warm-up) runs.

    Parameters
    ----------
    index : ImageIndex, str or path-like
        The index, or its file, read with
        :func:`~sklearn_imgretrieval.indexing.load_index` (which builds
        nothing from the file that could run code, and writes nothing).
    default_k : int, default=10
        Neighbours returned when a request gives no ``k``.
    max_k : int, default=100
        Largest ``k`` a request may ask for.
    max_upload_bytes : int, default=20 MiB
        Largest request body of a search by upload; larger ones get 413,
        refused while they arrive.
    embed_batch_size : int or None, default=1
        ``batch_size`` of the index's embedder while serving (in memory
        only): one query image is one forward pass instead of a padded batch
        of 32. None keeps the index's own.
    n_threads : int, default=None
        Threads decoding, embedding, searching and making thumbnails; None
        is one per core.
    allowed_hosts : sequence of str, default=("127.0.0.1", "localhost", "[::1]")
        Host names the app answers to (others get 400); ``["*"]`` for any.
        The default suits a server bound to 127.0.0.1.
    max_image_pixels : int, default=50_000_000
        Uploaded images with more pixels are refused (400) before decoding.
    thumbnail_size : int, default=192
        Longest side of the thumbnails, in pixels.
    thumbnail_cache_size : int, default=2048
        Thumbnails kept in memory (each made once, least recently used dropped).

    Returns
    -------
    app : starlette.applications.Starlette
        The app; ``app.state.searcher`` answers its queries.

    Examples
    --------
    >>> import numpy as np
    >>> from starlette.testclient import TestClient
    >>> from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    >>> from sklearn_imgretrieval.indexing import ImageIndex
    >>> from sklearn_imgretrieval.serve import create_app
    >>> images = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    >>> pipe = make_retrieval_pipeline(ImagePreprocessor(size=(8, 8)), NearestImageRetriever()).fit(images)
    >>> app = create_app(ImageIndex(pipe, ["a.png", "b.png", "c.png"]))
    >>> with TestClient(app, base_url="http://127.0.0.1") as client:
    ...     client.get("/api/index").json()["size"]
    3
    """
    if not hasattr(index, "kneighbors_of"):
        from ..indexing import load_index

        index = load_index(os.fspath(index))
    for name, value in {"default_k": default_k, "max_k": max_k, "max_upload_bytes": max_upload_bytes}.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if default_k > max_k:
        raise ValueError(f"default_k ({default_k}) cannot be more than max_k ({max_k}).")
    searcher = IndexSearcher(
        index,
        embed_batch_size=embed_batch_size,
        max_image_pixels=max_image_pixels,
        thumbnail_size=thumbnail_size,
        thumbnail_cache_size=thumbnail_cache_size,
    )
    page, page_headers = _page()
    # Shared by every request; anyio's limiter queues the rest instead of starting more threads.
    limiter = anyio.CapacityLimiter(n_threads or local_threads(-1))

    async def in_thread(function, *args):
        return await anyio.to_thread.run_sync(function, *args, limiter=limiter)

    def requested_k(request):
        text = request.query_params.get("k")
        if text is None:
            return default_k
        if not re.fullmatch(r"[0-9]{1,9}", text) or not 1 <= int(text) <= max_k:  # ASCII digits only
            raise HTTPException(400, f"k must be a whole number from 1 to {max_k}; got {text!r}.")
        return int(text)

    def requested_id(request):
        image_id = request.path_params["image_id"]
        if not searcher.has_id(image_id):
            raise HTTPException(404, f"No image {image_id} in the index.")
        return image_id

    def requested_filter(request):
        """?where=: a filter expression over the metadata, parsed (never evaluated as code); 400 if not one."""
        where = request.query_params.get("where")
        if where is None or not where.strip():
            return None
        try:
            searcher.select(where)  # checked here, before an upload is read
        except (ValueError, TypeError, KeyError) as exc:
            raise HTTPException(400, f"where is not a filter this index can use: {exc}") from None
        return where

    def answer(query, neighbours):
        return JSONResponse({"query": query, "k": len(neighbours), "neighbors": neighbours})

    async def home(request):
        """This page: drop or pick an image, see its nearest indexed images."""
        return HTMLResponse(page, headers=page_headers)

    async def describe_api(request):
        """These endpoints, with what each does."""
        endpoints = [
            {
                "methods": sorted(route.methods - {"HEAD"}),
                "path": route.path.replace(":int}", "}"),
                "description": _first_line(route.endpoint),
            }
            for route in app.routes
        ]
        return JSONResponse({"endpoints": endpoints, "upload_field": FIELD, "max_k": max_k, "default_k": default_k})

    async def health(request):
        """Start-up state: 200 once searches by upload are answered, 503 with Retry-After before."""
        if searcher.warm_up_error:
            return JSONResponse({"status": "failed", "error": searcher.warm_up_error}, status_code=500)
        if not searcher.ready:
            searcher.start_warm_up()
            return JSONResponse(
                {"status": "starting"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            )
        return JSONResponse({"status": "ready", "warm_up_seconds": searcher.warm_up_seconds})

    async def statistics(request):
        """The index: size, embedder, image size, search algorithm, metric, classes."""
        return JSONResponse(searcher.statistics())

    async def search(request):
        """Search by image: POST a file in the multipart field `image`; ?k= neighbours (default 10), ?where= filter."""
        k, where = requested_k(request), requested_filter(request)
        if searcher.warm_up_error:
            raise HTTPException(500, f"The network failed to start: {searcher.warm_up_error}")
        if not searcher.ready:
            searcher.start_warm_up()
            raise HTTPException(
                503,
                "The server is starting: the network is warming up. Retry in a few seconds.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        data, filename = await read_uploaded_file(request, max_upload_bytes)
        image = await in_thread(searcher.open_upload, data)
        neighbours = await in_thread(searcher.search_image, image, k, where)
        return answer({"filename": filename, "width": image.width, "height": image.height}, neighbours)

    async def neighbours_of(request):
        """Neighbours of an indexed image, by id, from its stored embedding; ?k= neighbours, ?where= filter."""
        image_id, k, where = requested_id(request), requested_k(request), requested_filter(request)
        neighbours = await in_thread(searcher.search_id, image_id, k, where)
        return answer(searcher.describe(image_id), neighbours)

    def requested_max_distance(request):
        text = request.query_params.get("max_distance")
        default = searcher.default_max_distance
        largest, unit = searcher.max_distance_range()
        allowed = f"from 0 to {largest:g}, in {unit}" if largest < np.inf else f"of at least 0, in {unit}"
        if text is None and default is not None:
            return default
        if text is None:
            raise HTTPException(
                400,
                f"Give max_distance, a number {allowed}: this index has no measured default (0.15 is the "
                "default for indexes of imgretrieval index's Lite0 features, compared by cosine distance).",
            )
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not 0 <= value <= largest or value == np.inf:  # NaN fails both comparisons
            raise HTTPException(
                400,
                f"max_distance must be a number {allowed}; got {text!r}."
                + (f" The default for this index is {default}." if default is not None else ""),
            )
        return value

    async def duplicates(request):
        """Groups of near-duplicate indexed images: ?max_distance= (default 0.15 for Lite0 indexes), ?k= per image,
        ?where= filter."""
        max_distance = requested_max_distance(request)
        top_k = requested_k(request) if "k" in request.query_params else None
        where = requested_filter(request)
        groups = await in_thread(searcher.duplicate_groups, max_distance, top_k, where)
        return JSONResponse({"max_distance": max_distance, "k": top_k, "where": where, "groups": groups})

    async def thumbnail(request):
        """A small JPEG of an indexed image, by id (made once, then kept in memory)."""
        image_id = request.path_params["image_id"]
        data = await in_thread(searcher.thumbnail, image_id) if searcher.has_id(image_id) else None
        if data is None:
            # One answer whatever the reason (no such id, a file missing, changed since indexing, not an
            # image, recorded by an index without digests): it tells nothing about the files of this machine.
            raise HTTPException(404, "This image cannot be shown.")
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type="image/jpeg", headers=headers)

    async def http_error(request, exc):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def unreadable_image(request, exc):
        return JSONResponse({"error": f"Not a usable image: {exc}."}, status_code=400)

    async def stopping(request, exc):
        return JSONResponse({"error": "The server is stopping."}, status_code=503)

    async def server_error(request, exc):  # a bug: the traceback goes to the log, not to the client
        return JSONResponse({"error": "The server failed to answer this request; its log says why."}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        searcher.start_warm_up()
        yield
        await anyio.to_thread.run_sync(searcher.wait_until_idle)

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/api", describe_api),
            Route("/api/health", health),
            Route("/api/index", statistics),
            Route("/api/search", search, methods=["POST"]),
            Route("/api/images/{image_id:int}/neighbors", neighbours_of),
            Route("/api/images/{image_id:int}/thumbnail", thumbnail),
            Route("/api/duplicates", duplicates),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))],
        exception_handlers={
            HTTPException: http_error,
            UnreadableImage: unreadable_image,
            ServerStopping: stopping,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    app.state.searcher = searcher
    return app
