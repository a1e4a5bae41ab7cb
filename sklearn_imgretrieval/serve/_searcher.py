"""The queries the web app answers, on one loaded index, safe to call from many threads.

The app runs each request's work on a thread pool. What may run side by
side does: decoding uploads and making thumbnails (Pillow releases the GIL).
What may not is serialised: the network's forward pass (Keras's predict
function is built lazily on first use, and TensorFlow already spreads one
pass over every core, so two at once only compete) and the search (a
binary IVF index sets ``nprobe`` on itself before each search).
"""

import contextlib
import functools
import io
import threading
import time

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._image_io import describe
from ..pipeline import set_query_batch_size
from ..preprocessing import ImagePreprocessor

__all__ = ["IndexSearcher", "ServerStopping", "UnreadableImage"]

#: ``max_distance`` of duplicate searches that give none, for the one kind of index it was
#: measured on: ``imgretrieval index``'s default embedder (EfficientNet-Lite0 with its ImageNet
#: weights, average-pooled at 224x224) and cosine distance. On the bundled photos, edited copies
#: were a median 0.014 to 0.074 from their original (at most 0.29) and different photos at least
#: 0.44 apart (``ImageIndex.find_duplicates``).
LITE0_COSINE_MAX_DISTANCE = 0.15
#: The embedder settings of that measurement.
_LITE0_DEFAULTS = {
    "backbone": "efficientnet_lite0",
    "weights": "imagenet",
    "pooling": "avg",
    "layer": None,
    "input_size": None,
    "fine_tune": False,
}


class UnreadableImage(ValueError):
    """An uploaded file that is not an image the index can search with."""


class ServerStopping(RuntimeError):
    """A search that arrived while the server shuts down."""


_FOLDERS_LISTED = 1000  # folder names the page offers in its filter (typing any other works too)


def _decoding_failure(exc, image):
    """The reason the preprocessor gave for the one image, without the advice it gives batch users."""
    prefix = f"  {describe(image)}: "
    lines = str(exc).splitlines() or [type(exc).__name__]
    reason = next((line[len(prefix) :] for line in lines if line.startswith(prefix)), lines[0])
    return reason.rstrip(". ")


def _prepare_pipeline(pipeline, batch_size):
    """Tune the loaded pipeline's steps for one query at a time.

    A Keras embedder pads every batch to ``batch_size`` rows, so with the
    default of 32 one query image costs 32 forward passes; the server embeds
    one image per request, and requests run one pass at a time anyway. The
    decoder gets one thread: the server runs requests side by side instead.
    Only the in-memory copy changes, never the index file.
    """
    pipeline[0].set_params(n_jobs=1)
    if batch_size is not None:
        set_query_batch_size(pipeline, batch_size)


class IndexSearcher:
    """Thread-safe searches, thumbnails and statistics of one :class:`~sklearn_imgretrieval.indexing.ImageIndex`.

    Parameters
    ----------
    index : ImageIndex
        The index to answer from. Its pipeline's first step must decode
        images (an :class:`~sklearn_imgretrieval.ImagePreprocessor`), as the
        indexes of ``imgretrieval index`` do, since queries arrive as image files.
    embed_batch_size : int or None, default=1
        ``batch_size`` given to the pipeline's embedder (in memory only); None
        keeps the index's own.
    max_image_pixels : int, default=50_000_000
        Uploads with more pixels are refused before they are decoded.
    thumbnail_size : int, default=192
        Longest side of a thumbnail, in pixels.
    thumbnail_cache_size : int, default=2048
        Thumbnails kept in memory, the least recently used dropped first
        (a 192-pixel JPEG is about 10 kB).

    Attributes
    ----------
    warm_up_seconds : float or None
        How long the first forward pass took; None until it is done.
    """

    def __init__(
        self,
        index,
        *,
        embed_batch_size=1,
        max_image_pixels=50_000_000,
        thumbnail_size=192,
        thumbnail_cache_size=2048,
    ):
        steps = index.pipeline.steps
        if len(steps) < 2 or not isinstance(steps[0][1], ImagePreprocessor):
            raise ValueError(
                "The index's pipeline must start with an ImagePreprocessor, which decodes the uploaded "
                f"images; it starts with {type(steps[0][1]).__name__}. Build the index with "
                "`imgretrieval index FOLDER -o FILE`."
            )
        self.index = index
        self.max_image_pixels = max_image_pixels
        self.thumbnail_size = thumbnail_size
        self.warm_up_seconds = None
        _prepare_pipeline(index.pipeline, embed_batch_size)
        # The first step decodes (side by side); the others embed (one call at a time).
        self._decoder = steps[0][1]
        self._embedders = [step for _, step in steps[1:-1] if step is not None and step != "passthrough"]
        self._retriever = steps[-1][1]
        self._embed_lock = threading.Lock()
        self._search_lock = threading.Lock()
        self._ready = threading.Event()
        self._warm_up_started = False
        self._stopping = False
        self._warm_up_start_lock = threading.Lock()
        self.warm_up_error = None
        # Per instance, so the cache goes with the searcher; lru_cache is thread-safe.
        self.thumbnail = functools.lru_cache(maxsize=thumbnail_cache_size)(self._make_thumbnail)
        self.duplicate_groups = functools.lru_cache(maxsize=8)(self._duplicate_groups)

    # ---------------------------------------------------------- start-up
    @property
    def ready(self):
        """Whether searches by image are answered (the network has run once)."""
        return self._ready.is_set()

    def start_warm_up(self):
        """Run :meth:`warm_up` on a background thread, once; later calls do nothing."""
        with self._warm_up_start_lock:
            if self._warm_up_started:
                return
            self._warm_up_started = True
        # A daemon: Ctrl-C during warm-up must not wait for the forward pass.
        threading.Thread(target=self.warm_up, name="imgretrieval-warm-up", daemon=True).start()

    def wait_until_idle(self):
        """Block until no forward pass runs (the warm-up's included).

        Called at shutdown: TensorFlow aborts the process when the
        interpreter exits while it computes in another thread.
        """
        if self._warm_up_started:
            self._ready.wait()
        with self._embed_lock:
            self._stopping = True  # a request still waiting for the lock must not start one

    def warm_up(self):
        """Embed one blank image: the first forward pass builds the network's
        compiled function, which takes seconds; later ones take milliseconds."""
        started = time.perf_counter()
        try:
            self._embed(Image.new("RGB", (64, 64), (128, 128, 128)))
        except Exception as exc:  # reported by every search instead of a traceback in a thread
            self.warm_up_error = f"{type(exc).__name__}: {exc}"
        self.warm_up_seconds = time.perf_counter() - started
        self._ready.set()

    # ------------------------------------------------------------ search
    def open_upload(self, data):
        """The PIL image in an uploaded file's bytes, or UnreadableImage saying why not.

        Only the header is read here; the pixels are decoded by the index's
        own preprocessor (at reduced scale for large JPEGs).
        """
        if not data:
            raise UnreadableImage("the uploaded file is empty")
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise UnreadableImage(
                "the uploaded file is not an image Pillow can read (JPEG, PNG, GIF, BMP, TIFF, WebP, ...)"
            ) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(f"the uploaded image cannot be read: {exc}") from None
        if image.width * image.height > self.max_image_pixels:
            raise UnreadableImage(
                f"the uploaded image has {image.width}x{image.height} pixels, more than the "
                f"{self.max_image_pixels:,} this server decodes; send a smaller copy"
            )
        return image

    def _embed(self, image):
        try:
            rows = self._decoder.transform([image])
        except ValueError as exc:  # the preprocessor names the image and the reason
            raise UnreadableImage(
                f"the uploaded image cannot be decoded ({_decoding_failure(exc, image)}); it may be damaged "
                "or cut short: send the whole file again, or another copy of the image"
            ) from None
        with self._embed_lock:
            if self._stopping:
                raise ServerStopping("the server is stopping")
            for step in self._embedders:
                rows = step.transform(rows)
        return rows

    def _neighbours(self, distances, ids):
        return [self.describe(int(i), distance=float(d)) for d, i in zip(distances[0], ids[0])]

    def select(self, where):
        """The rows a filter expression selects (None for all); a ValueError names what is wrong."""
        return None if where is None else self.index.select(where)

    def search_image(self, image, k, where=None):
        """The ``k`` nearest indexed images of a PIL image (at most as many as match ``where``)."""
        subset = self.select(where)
        embedding = self._embed(image)
        k = min(k, len(self.index) if subset is None else int(subset.sum()))
        if k < 1:
            return []
        with self._search_lock:
            distances, rows = self._retriever.kneighbors(embedding, n_neighbors=k, subset=subset)
        return self._neighbours(distances, self.index.ids[rows])

    def search_id(self, image_id, k, where=None):
        """The ``k`` nearest other indexed images of indexed image ``image_id``, from its
        stored embedding (nothing decoded)."""
        subset = self.select(where)
        row = int(self.index.rows_of([image_id])[0])
        n_candidates = len(self.index) if subset is None else int(subset.sum())
        k = min(k, n_candidates - (subset is None or bool(subset[row])))
        if k < 1:
            return []
        with self._search_lock:
            distances, ids = self.index.kneighbors_of([image_id], n_neighbors=k, where=subset)
        return self._neighbours(distances, ids)

    def max_distance_range(self):
        """``(largest, unit)`` of a duplicate search's ``max_distance`` in the index's metric."""
        metric = self._retriever.metric
        if metric == "cosine":
            return 2.0, "the cosine distance"
        if metric == "hamming":  # uint8 rows of packed bits
            bits = 8 * int(self._retriever.n_features_in_)
            return float(bits), f"differing bits of the {bits}-bit codes"
        return np.inf, f"the {metric if isinstance(metric, str) else 'custom'} distance"

    @property
    def default_max_distance(self):
        """The ``max_distance`` of a duplicate search that gives none; None where none was measured."""
        embedders = self._embedders
        if self._retriever.metric != "cosine" or len(embedders) != 1 or not hasattr(embedders[0], "get_params"):
            return None
        params = embedders[0].get_params(deep=False)
        calibrated = all(params.get(name, "unset") == value for name, value in _LITE0_DEFAULTS.items())
        return LITE0_COSINE_MAX_DISTANCE if calibrated else None

    def _duplicate_groups(self, max_distance, top_k, where=None):
        """Groups of near-duplicate indexed images, each a list of image
        descriptions with the distance to the group's nearest other member."""
        # Reads the stored rows only (no search settings), so searches go on meanwhile.
        subset = self.select(where)
        found = self.index.find_duplicates(max_distance, top_k=top_k, where=subset)
        rows = np.arange(len(self.index)) if subset is None else np.flatnonzero(subset)
        ids = self.index.ids[rows]  # found's items are positions among the rows taking part
        nearest = {}
        for (first, second), distance in zip(found.pairs.tolist(), found.distances.tolist()):
            for item in (first, second):
                nearest[item] = min(nearest.get(item, np.inf), distance)
        return [
            [self.describe(int(ids[item]), distance=nearest[int(item)]) for item in group] for group in found.groups
        ]

    # ------------------------------------------------------------ images
    def has_id(self, image_id):
        try:
            self.index.rows_of([image_id])
        except (ValueError, TypeError):
            return False
        return True

    def describe(self, image_id, **extra):
        """What the API says about one indexed image: its id, metadata (dates as ISO text), extras."""
        (record,) = self.index.metadata([image_id])
        if record.get("label") == "":
            record["label"] = None  # the images at the folder's top, in no subfolder
        record = {name: value.isoformat() if hasattr(value, "isoformat") else value for name, value in record.items()}
        return {**record, **extra, "thumbnail": f"/api/images/{image_id}/thumbnail"}

    def _make_thumbnail(self, image_id):
        """A small JPEG of indexed image ``image_id``, or None when it cannot be shown.

        Only a file whose content still has the digest recorded when it was
        indexed is opened (``ImageIndex.open_file``): an index from someone
        else cannot name a file of this machine and have it shown, since it
        cannot know that file's content. Every failure is the same None.
        """
        try:
            with self.index.open_file(image_id) or contextlib.nullcontext() as file:
                if file is None:
                    return None
                with Image.open(file) as image:
                    size = (self.thumbnail_size, self.thumbnail_size)
                    image.draft("RGB", size)  # JPEG: decode at 1/2 to 1/8 scale when that is enough
                    upright = ImageOps.exif_transpose(image)
                    upright.thumbnail(size)
                    buffer = io.BytesIO()
                    upright.convert("RGB").save(buffer, format="JPEG", quality=80)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # damaged since indexing
            return None
        return buffer.getvalue()

    # -------------------------------------------------------- statistics
    def statistics(self):
        """Size, embedder, search algorithm and metric of the index, as plain values."""
        index, retriever = self.index, self._retriever
        decoder, embedders = self._decoder, self._embedders
        size = decoder.size
        return {
            "size": len(index),
            "embedder": index.settings.get("embedder") or (type(embedders[0]).__name__ if embedders else None),
            "steps": [type(step).__name__ for _, step in index.pipeline.steps],
            "image_size": None if size is None else [int(side) for side in size],
            "color_mode": decoder.color_mode,
            "dimensions": int(retriever.n_features_in_),
            "algorithm": getattr(retriever, "fit_algorithm_", None),
            "metric": retriever.metric if isinstance(retriever.metric, str) else repr(retriever.metric),
            "root": index.root,
            "classes": list(index.class_names),
            "columns": index.column_kinds(),
            "folders": sorted({str(folder) for folder in index.column("folder")})[:_FOLDERS_LISTED],
            "settings": index.settings,
            "ready": self.ready,
            "warm_up_seconds": self.warm_up_seconds,
        }
