"""``imgretrieval index``: embed a folder of images and save a searchable index."""

from pathlib import Path

from .._version import __version__
from ._common import (
    color_mode,
    default_size,
    embedder_arguments,
    fit_components_to,
    in_chunks,
    list_folder,
    make_embedder,
)
from .query import MODEL_FORMAT


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "index",
        help="embed a folder of images and save a searchable index",
        description="Walk FOLDER recursively, embed every readable image (unreadable files are "
        "skipped with a warning) and save the fitted pipeline with the list of paths.",
        epilog="example:\n  imgretrieval index photos/ -o photos.joblib --embedder lite0",
        formatter_class=formatter,
    )
    parser.add_argument("folder", help="folder of images (subfolders are labels)")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.joblib)")
    parser.add_argument("--metric", default="cosine", help="distance between embeddings (default: cosine)")
    embedder_arguments(parser)
    parser.set_defaults(run=run)


def _fit_pipeline(paths, labels, args):
    """Fit preprocessor, embedder and retriever step by step, with progress bars,
    decoding each image once; return them as one fitted RetrievalPipeline."""
    from .. import ImagePreprocessor, NearestImageRetriever, RetrievalPipeline

    size = tuple(args.size) if args.size else default_size(args.embedder)
    preprocessor = ImagePreprocessor(size=size, color_mode=color_mode(args.embedder), n_jobs=-1)
    preprocessor.fit(paths)
    rows = in_chunks(preprocessor.transform, paths, "decoding")
    embedder = make_embedder(args.embedder, epochs=args.epochs, batch_size=args.batch_size)
    fit_components_to(embedder, *rows.shape)
    embedder.fit(rows)
    embeddings = in_chunks(embedder.transform, rows, "embedding")
    n_neighbors = min(5, len(paths))
    retriever = NearestImageRetriever(n_neighbors=n_neighbors, metric=args.metric).fit(embeddings, labels)
    return RetrievalPipeline(
        [("imagepreprocessor", preprocessor), ("embedder", embedder), ("nearestimageretriever", retriever)]
    )


def run(args):
    paths, labels, class_names = list_folder(args.folder)
    pipe = _fit_pipeline(paths, labels, args)
    import joblib

    model = {
        "format": MODEL_FORMAT,
        "version": __version__,
        "pipeline": pipe,
        "paths": paths,
        "labels": labels,
        "class_names": class_names,
        "embedder": args.embedder,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, args.output)
    print(f"indexed {len(paths)} images from {args.folder} into {args.output}")
