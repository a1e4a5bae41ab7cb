"""``imgretrieval index``: stream a folder of images into a searchable index file."""

import math
import os
import sys
from pathlib import Path

from .. import embedders
from .._image_io import skipped_files_message
from ._common import (
    UsageError,
    check_enough_images,
    embedder_arguments,
    embedder_settings,
    fit_components_to,
    list_folder,
    make_embedder,
    make_preprocessor,
    positive_int,
    printed_warnings,
    progress_bars,
)

_LARGE = 1 << 30  # bytes of memory or of index file worth a warning
_ALGORITHMS = ("auto", "flat", "ivf", "hnsw", "ivfpq")


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "index",
        help="embed a folder of images into a searchable index file",
        description="Walk FOLDER recursively and stream its images into an index, chunk by chunk "
        "(decode, embed, add): memory stays flat however many images there are. Unreadable files "
        "are skipped with a warning. The file loads without running code. A run stopped by Ctrl-C "
        "or killed keeps the previous index, and the same command continues where it stopped.",
        epilog="examples:\n"
        "  imgretrieval index photos/ -o photos.idx\n"
        "  imgretrieval index photos/ -o photos.idx --update          # only new or changed files\n"
        "  imgretrieval index photos/ -o photos.idx --workers 4       # a local Dask cluster\n"
        "  imgretrieval index photos/ -o photos.idx --scheduler tcp://10.0.0.5:8786\n"
        "  imgretrieval index photos/ -o /shared/photos.idx --shards 8 --scheduler tcp://10.0.0.5:8786",
        formatter_class=formatter,
    )
    parser.add_argument(
        "folder", help="folder of images; each image's label is its top subfolder below FOLDER (see --labels)"
    )
    parser.add_argument("-o", "--output", required=True, help="index file to write, such as photos.idx")
    parser.add_argument(
        "--update",
        action="store_true",
        help="update the index in --output: embed new and changed files (by size and time), drop deleted ones",
    )
    parser.add_argument(
        "--labels",
        choices=("top", "parent"),
        help="which folder is an image's label: 'top', the first level below FOLDER (FOLDER/cats/indoor/1.jpg is a "
        "'cats'), or 'parent', the folder holding the image ('cats/indoor'). Default: top",
    )
    parser.add_argument("--metric", help="distance between embeddings. Default: cosine")
    parser.add_argument(
        "--metadata",
        metavar="CSV",
        help="join your own columns by path from this CSV (a header row with a 'path' column, paths absolute or "
        "relative to FOLDER); numbers, true/false and ISO dates keep their types. Filter on them with "
        "query --where",
    )
    parser.add_argument(
        "--algorithm",
        choices=_ALGORITHMS,
        help="search structure: exact (auto, flat) or approximate (ivf, hnsw, ivfpq; see the docs' "
        "'Choosing an index'). Default: auto",
    )
    embedder_arguments(parser)
    stream = parser.add_argument_group("streaming")
    stream.add_argument(
        "--fit-sample",
        type=positive_int,
        default=5000,
        help="images that pca, autoencoder and vae learn from before the folder streams through (default: %(default)s)",
    )
    stream.add_argument(
        "--chunk-size",
        type=positive_int,
        default=256,
        help="images decoded and embedded at a time (default: %(default)s)",
    )
    cluster = stream.add_mutually_exclusive_group()
    stream.add_argument(
        "--shards",
        type=positive_int,
        metavar="S",
        help="split the index into S shards (one file each beside the index), held on the Dask workers with "
        "--workers or --scheduler; query and serve it with --scheduler",
    )
    cluster.add_argument(
        "--scheduler", metavar="ADDRESS", help="embed (and hold shards) on the Dask cluster of this scheduler"
    )
    cluster.add_argument(
        "--workers", type=positive_int, metavar="N", help="embed on a local Dask cluster of N worker processes"
    )
    parser.set_defaults(run=run)


def _gigabytes(n_bytes):
    return f"{n_bytes / 2**30:.1f} GB"


def _warn_about_cost(n_images, image_shape, embedder, chunk_size):
    """Warn when an image size makes indexing take gigabytes of memory or of file."""
    height, width, channels = image_shape
    features = height * width * channels
    pixels = min(n_images, chunk_size) * features * 4  # float32 rows of one chunk, held while embedding
    model, what = 0, ""
    if hasattr(embedder, "n_components"):  # PCA stores one float32 image per component, and the mean
        model, what = (embedder.n_components + 1) * features * 4, "the PCA index file"
    elif getattr(embedder, "architecture", None) == "conv":
        # The dense layer after the convolutions, and its mirror in the decoder.
        grid = math.ceil(height / 2 ** len(embedder.filters)) * math.ceil(width / 2 ** len(embedder.filters))
        units = embedder.hidden_units[0] if embedder.hidden_units else embedder.latent_dim
        model, what = 2 * grid * embedder.filters[-1] * units * 4, "the autoencoder's weights"
    if max(pixels, model) > _LARGE:
        cost = f"a chunk of {min(n_images, chunk_size)} images at {height}x{width} takes {_gigabytes(pixels)} of memory"
        if model:
            cost += f", and {what} about {_gigabytes(model)}"
        print(f"imgretrieval: warning: {cost}. A smaller --size costs far less.", file=sys.stderr)


def _new_pipeline(settings, n_images, fit_sample, chunk_size):
    from .. import NearestImageRetriever, RetrievalPipeline
    from .._sklearn_compat import validate_params
    from ..neighbors import resolve_algorithm

    retriever = NearestImageRetriever(
        n_neighbors=min(5, n_images), metric=settings["metric"], algorithm=settings["algorithm"]
    )
    try:  # a misspelt --metric, or one the algorithm cannot serve, is reported before any work
        validate_params(retriever)
        resolve_algorithm(retriever.algorithm, retriever.metric)
    except ValueError as exc:
        raise UsageError(f"--metric {settings['metric']} with --algorithm {settings['algorithm']}: {exc}") from None
    preprocessor = make_preprocessor(settings)
    embedder = make_embedder(settings)
    size = settings["size"]
    image_shape = (size[0], size[1], 3 if settings["color"] == "rgb" else 1)
    fit_components_to(embedder, min(fit_sample, n_images), math.prod(image_shape))
    _warn_about_cost(n_images, image_shape, embedder, chunk_size)
    if settings["embedder"] in embedders.LEARNED_EMBEDDERS and n_images > fit_sample:
        print(
            f"imgretrieval: {settings['embedder']} learns from a random sample of {fit_sample} of the "
            f"{n_images} images (--fit-sample), then every image streams through it",
            file=sys.stderr,
        )
    return RetrievalPipeline(
        [("imagepreprocessor", preprocessor), ("embedder", embedder), ("nearestimageretriever", retriever)]
    )


def _read_metadata(path, folder):
    """The --metadata CSV, read and checked before any image is: a bad file is one line, nothing lost."""
    if path is None:
        return None
    from ..indexing import ImageIndex

    if not Path(path).is_file():
        raise UsageError(f"--metadata {path}: no such file")
    try:
        return ImageIndex.read_metadata(path, folder)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise UsageError(f"--metadata {path}: {exc}") from None


def run(args):
    from ..indexing import build_index, dask_client, load_index
    from ..persistence import delete_saved

    output = Path(args.output)
    checkpoint = output.with_name(output.name + ".partial")
    # The index --update reads is the one it replaces, atomically: that output may name an input.
    args.outputs.check(
        [("-o", output), ("-o", checkpoint)], reads=[args.metadata] if args.metadata else [], scans=[args.folder]
    )
    _read_metadata(args.metadata, args.folder)  # checked before any image is read
    if not Path(args.folder).is_dir():
        raise UsageError(f"{args.folder} is not a folder")
    with dask_client(args.scheduler, args.workers) as client:
        stored, index = None, None
        if args.update:
            if not output.is_file():
                raise UsageError(f"--update needs the index to update, and there is none at {output}")
            index = load_index(output, client=client)
            stored = {"labels": "top", **index.settings}  # indexes from before --labels took the top folder
            given = (("metric", args.metric), ("algorithm", args.algorithm), ("shards", args.shards))
            for option, value in (*given, ("labels", args.labels)):
                if value is not None and stored.get(option) != value:
                    raise UsageError(
                        f"the index was built with --{option} {stored.get(option)}, not {value}; leave --{option} "
                        "out, or build a new index without --update."
                    )
        settings = embedder_settings(args, stored)
        settings["metric"] = (stored or {}).get("metric") or args.metric or "cosine"
        settings["algorithm"] = (stored or {}).get("algorithm") or args.algorithm or "auto"
        settings["shards"] = (stored or {}).get("shards") or args.shards
        settings["labels"] = (stored or {}).get("labels") or args.labels or "top"
        # The embedder learns from every image of a small folder: count only the readable ones (cheap there).
        verify = settings["embedder"] in embedders.LEARNED_EMBEDDERS and not args.update
        paths, labels, class_names = list_folder(args.folder, verify=False, label_from=settings["labels"])
        if verify and len(paths) <= args.fit_sample:
            paths, labels, class_names = list_folder(args.folder, verify=True, label_from=settings["labels"])
        check_enough_images(settings["embedder"], len(paths), args.folder)

        try:
            with printed_warnings(), progress_bars() as bars:
                if args.update:
                    changes = index.update(
                        paths, labels, class_names, chunk_size=args.chunk_size, client=client, checkpoint=checkpoint,
                        progress=bars, metadata=args.metadata,
                    )  # fmt: skip
                else:
                    pipeline = _new_pipeline(settings, len(paths), args.fit_sample, args.chunk_size)
                    index = build_index(
                        paths, pipeline, labels=labels, class_names=class_names, root=args.folder,
                        settings=settings, chunk_size=args.chunk_size, fit_sample=args.fit_sample, random_state=0,
                        client=client, checkpoint=checkpoint, progress=bars, shards=settings["shards"],
                        metadata=args.metadata,
                    )  # fmt: skip
        except KeyboardInterrupt:
            if checkpoint.exists():
                args.outputs.written.append(f"the progress in {checkpoint} (run the same command again to continue)")
            raise
        args.outputs.save_index(index, output)  # with the client open: a sharded index's shards write their files
    delete_saved(checkpoint)
    if args.update:
        if changes.skipped:
            # named under the folder as the user typed it, as `index` and `dedupe` name them
            root = index.root or os.curdir
            shown = [(os.path.join(args.folder, os.path.relpath(path, root)), why) for path, why in changes.skipped]
            print(f"imgretrieval: warning: {skipped_files_message(shown)}", file=sys.stderr)
        print(f"updated {output} from {args.folder}: {changes}; {len(index)} images in all")
    else:
        print(f"indexed {len(index)} images from {args.folder} into {output}")
