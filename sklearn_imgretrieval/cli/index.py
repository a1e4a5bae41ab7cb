"""``imgretrieval index``: embed a folder of images and save a searchable index."""

import math
import sys

from .._files import check_output_path
from ._common import (
    check_enough_images,
    color_mode,
    default_size,
    embedder_arguments,
    fit_components_to,
    in_chunks,
    list_folder,
    make_embedder,
    save_index,
)

_LARGE = 1 << 30  # bytes of memory or of index file worth a warning


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "index",
        help="embed a folder of images and save a searchable index",
        description="Walk FOLDER recursively, embed every readable image (unreadable files are "
        "skipped with a warning) and save the fitted pipeline with the list of paths, in a "
        "file format that loads without running code.",
        epilog="example:\n  imgretrieval index photos/ -o photos.idx --embedder lite0",
        formatter_class=formatter,
    )
    parser.add_argument("folder", help="folder of images (subfolders are labels)")
    parser.add_argument("-o", "--output", required=True, help="index file to write, such as photos.idx")
    parser.add_argument("--metric", default="cosine", help="distance between embeddings (default: cosine)")
    embedder_arguments(parser)
    parser.set_defaults(run=run)


def _gigabytes(n_bytes):
    return f"{n_bytes / 2**30:.1f} GB"


def _warn_about_cost(n_images, image_shape, embedder):
    """Warn when an image size makes indexing take gigabytes of memory or of file."""
    height, width, channels = image_shape
    features = height * width * channels
    pixels = n_images * features * 4  # float32 rows of every image, held while embedding
    model, what = 0, ""
    if hasattr(embedder, "n_components"):  # PCA stores one float32 image per component, and the mean
        model, what = (embedder.n_components + 1) * features * 4, "the PCA index file"
    elif getattr(embedder, "architecture", None) == "conv":
        # The dense layer after the convolutions, and its mirror in the decoder.
        grid = math.ceil(height / 2 ** len(embedder.filters)) * math.ceil(width / 2 ** len(embedder.filters))
        units = embedder.hidden_units[0] if embedder.hidden_units else embedder.latent_dim
        model, what = 2 * grid * embedder.filters[-1] * units * 4, "the autoencoder's weights"
    if max(pixels, model) > _LARGE:
        cost = f"{n_images} images at {height}x{width} take {_gigabytes(pixels)} of memory while indexing"
        if model:
            cost += f", and {what} about {_gigabytes(model)}"
        print(f"imgretrieval: warning: {cost}. A smaller --size costs far less.", file=sys.stderr)


def _fit_pipeline(paths, labels, args, size):
    """Fit preprocessor, embedder and retriever step by step, with progress bars,
    decoding each image once; return them as one fitted RetrievalPipeline."""
    from .. import ImagePreprocessor, NearestImageRetriever, RetrievalPipeline

    retriever = NearestImageRetriever(n_neighbors=min(5, len(paths)), metric=args.metric)
    retriever._validate_params()  # a misspelt --metric is reported before the work, not after
    preprocessor = ImagePreprocessor(size=size, color_mode=color_mode(args.embedder), n_jobs=-1)
    preprocessor.fit(paths)
    embedder = make_embedder(args.embedder, epochs=args.epochs, batch_size=args.batch_size)
    fit_components_to(embedder, len(paths), math.prod(preprocessor.image_shape_))
    _warn_about_cost(len(paths), preprocessor.image_shape_, embedder)
    rows = in_chunks(preprocessor.transform, paths, "decoding")
    embedder.fit(rows)
    embeddings = in_chunks(embedder.transform, rows, "embedding")
    retriever.fit(embeddings, labels)
    return RetrievalPipeline(
        [("imagepreprocessor", preprocessor), ("embedder", embedder), ("nearestimageretriever", retriever)]
    )


def run(args):
    from ..indexing import ImageIndex

    check_output_path(args.output)
    paths, labels, class_names = list_folder(args.folder)
    check_enough_images(args.embedder, len(paths), args.folder)
    size = tuple(args.size) if args.size else default_size(args.embedder)
    pipe = _fit_pipeline(paths, labels, args, size)
    settings = {"embedder": args.embedder, "size": list(size), "metric": args.metric}
    index = ImageIndex(pipe, paths, root=args.folder, labels=labels, class_names=class_names, settings=settings)
    save_index(index, args.output)
    print(f"indexed {len(paths)} images from {args.folder} into {args.output}")
