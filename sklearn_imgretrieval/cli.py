"""The ``imgretrieval`` command: index a folder of images, query it, evaluate.

Only argparse and the package's light modules are imported at start-up;
Keras (and so TensorFlow) is imported when a command needs an embedder, so
``imgretrieval --help`` answers at once.
"""

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ._version import __version__

MODEL_FORMAT = "sklearn-imgretrieval-index"
EMBEDDERS = ("lite0", "autoencoder", "vae", "pca")
_CHUNK = 256  # images decoded or embedded between two progress updates


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


# ------------------------------------------------------------------ helpers
def _progress(done, total, label, started):
    """A one-line progress bar on stderr, redrawn in place on a terminal."""
    if not sys.stderr.isatty() and done < total:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.perf_counter() - started
    line = f"{label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:5.1f}s"
    end = "\n" if done >= total else ""
    print(("\r" if sys.stderr.isatty() else "") + line, end=end, file=sys.stderr, flush=True)


def _in_chunks(function, items, label):
    """``function`` over ``items`` in chunks, stacked, with a progress bar."""
    started = time.perf_counter()
    parts = []
    for start in range(0, len(items), _CHUNK):
        parts.append(function(items[start : start + _CHUNK]))
        _progress(min(start + _CHUNK, len(items)), len(items), label, started)
    return np.concatenate(parts)


def _make_embedder(name, *, epochs, batch_size, random_state=0):
    """The embedder a command-line name stands for."""
    if name == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=64, random_state=random_state)
    if name in ("autoencoder", "vae"):
        from . import AutoencoderEmbedder, VAEEmbedder

        cls = AutoencoderEmbedder if name == "autoencoder" else VAEEmbedder
        params = dict(latent_dim=64 if name == "autoencoder" else 32, epochs=epochs, random_state=random_state)
        if batch_size:
            params["batch_size"] = batch_size
        return cls(architecture="conv", **params)
    from . import PretrainedCNNEmbedder

    params = {"batch_size": batch_size} if batch_size else {}
    if name == "lite0":
        return PretrainedCNNEmbedder(**params)
    return PretrainedCNNEmbedder(backbone=name, weights="imagenet", **params)


def _fit_components_to(embedder, n_samples, n_features):
    """Lower PCA's 64 components to what a small folder allows."""
    if hasattr(embedder, "n_components"):
        embedder.set_params(n_components=min(embedder.n_components, n_samples, n_features))
    return embedder


def _default_size(embedder_name):
    return (64, 64) if embedder_name in ("pca", "autoencoder", "vae") else (224, 224)


def _color_mode(embedder_name):
    return "grayscale" if embedder_name in ("pca", "autoencoder", "vae") else "rgb"


def _list_folder(folder):
    from .datasets import load_image_folder

    if not Path(folder).is_dir():
        raise UsageError(f"{folder} is not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            paths, labels, class_names = load_image_folder(folder, verify=True, n_jobs=-1)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    for warning in caught:
        print(f"imgretrieval: warning: {warning.message}", file=sys.stderr)
    return paths, labels, class_names


def _fit_pipeline(paths, labels, args):
    """Fit preprocessor, embedder and retriever step by step, with progress bars,
    decoding each image once; return them as one fitted RetrievalPipeline."""
    from . import ImagePreprocessor, NearestImageRetriever, RetrievalPipeline

    size = tuple(args.size) if args.size else _default_size(args.embedder)
    preprocessor = ImagePreprocessor(size=size, color_mode=_color_mode(args.embedder), n_jobs=-1)
    preprocessor.fit(paths)
    rows = _in_chunks(preprocessor.transform, paths, "decoding")
    embedder = _make_embedder(args.embedder, epochs=args.epochs, batch_size=args.batch_size)
    _fit_components_to(embedder, *rows.shape)
    embedder.fit(rows)
    embeddings = _in_chunks(embedder.transform, rows, "embedding")
    n_neighbors = min(5, len(paths))
    retriever = NearestImageRetriever(n_neighbors=n_neighbors, metric=args.metric).fit(embeddings, labels)
    return RetrievalPipeline(
        [("imagepreprocessor", preprocessor), ("embedder", embedder), ("nearestimageretriever", retriever)]
    )


def _load_model(path):
    import joblib

    if not Path(path).is_file():
        raise UsageError(f"no model file at {path}")
    try:
        model = joblib.load(path)
    except Exception as exc:  # any unpickling failure means: not one of ours
        raise UsageError(f"{path} is not a model saved by `imgretrieval index` ({type(exc).__name__})") from exc
    if not isinstance(model, dict) or model.get("format") != MODEL_FORMAT:
        raise UsageError(f"{path} is not a model saved by `imgretrieval index`")
    return model


# ----------------------------------------------------------------- commands
def _cmd_index(args):
    paths, labels, class_names = _list_folder(args.folder)
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


def _cmd_query(args):
    model = _load_model(args.model)
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise UsageError(f"no such image file: {', '.join(missing)}")
    gallery = model["paths"]
    k = min(args.k, len(gallery))
    distances, indices = model["pipeline"].kneighbors(args.images, n_neighbors=k)
    results = [
        {
            "query": query,
            "neighbors": [
                {"path": gallery[i], "distance": float(d)} for i, d in zip(indices[row], distances[row])
            ],
        }
        for row, query in enumerate(args.images)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(f"query: {result['query']}")
            for rank, neighbour in enumerate(result["neighbors"], start=1):
                print(f"  {rank:>3}  {neighbour['distance']:10.4f}  {neighbour['path']}")
    if args.plot:
        from .plotting import plot_retrieval

        fig = plot_retrieval(args.images, gallery, indices, distances)
        fig.savefig(args.plot, dpi=100, bbox_inches="tight")
        print(f"wrote {args.plot}", file=sys.stderr)


def _labelled_dataset(name):
    """(gallery, gallery labels, queries, query labels, size) of an evaluation set."""
    if name == "digits":
        from sklearn.model_selection import train_test_split

        from .datasets import load_digits_images

        images, labels = load_digits_images()
        Xg, Xq, yg, yq = train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)
        return Xg, yg, Xq, yq, (16, 16)
    if name == "fashion-mnist":
        from .datasets import load_fashion_mnist

        Xg, yg = load_fashion_mnist("train")
        Xq, yq = load_fashion_mnist("test")
        return Xg, yg, Xq, yq, (28, 28)
    paths, labels, _ = _list_folder(name)
    from sklearn.model_selection import train_test_split

    paths = np.asarray(paths, dtype=object)
    stratify = labels if np.bincount(labels).min() >= 2 else None
    Pg, Pq, yg, yq = train_test_split(paths, labels, test_size=0.25, stratify=stratify, random_state=0)
    return list(Pg), yg, list(Pq), yq, None


def _metrics_table(rows):
    """Rows of (name, evaluate_retrieval's dict, seconds) as a text table.

    The cut-offs come from the keys: on a gallery smaller than 10 or 100
    images, evaluate_retrieval lowers them to the gallery's size.
    """
    keys = [next(key for key in rows[0][1] if key.startswith(prefix)) for prefix in ("precision@", "map@", "knn_accuracy@")]
    titles = [f"P@{keys[0][10:]}", f"mAP@{keys[1][4:]}", f"{keys[2][13:]}-NN acc"]
    header = f"{'embedding':<28} {titles[0]:>7} {titles[1]:>8} {titles[2]:>9} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for name, scores, seconds in rows:
        values = " ".join(f"{scores[key]:>{width}.3f}" for key, width in zip(keys, (7, 8, 9)))
        lines.append(f"{name:<28} {values} {seconds:>8.1f}")
    return "\n".join(lines)


def _evaluate(name, steps, data):
    from . import NearestImageRetriever, make_retrieval_pipeline
    from .metrics import evaluate_retrieval

    Xg, yg, Xq, yq = data
    started = time.perf_counter()
    pipe = make_retrieval_pipeline(*steps, NearestImageRetriever(metric="cosine"))
    scores = evaluate_retrieval(pipe, Xg, yg, Xq, yq, k=10, map_k=100, knn_k=5)
    return name, scores, time.perf_counter() - started


def _cmd_evaluate(args):
    from . import ImagePreprocessor

    Xg, yg, Xq, yq, dataset_size = _labelled_dataset(args.dataset)
    size = tuple(args.size) if args.size else (dataset_size or _default_size(args.embedder))
    # The bundled sets are grayscale; a pretrained CNN repeats gray to 3 channels itself.
    color = "grayscale" if dataset_size else _color_mode(args.embedder)
    data = (Xg, yg, Xq, yq)
    embedder = _make_embedder(args.embedder, epochs=args.epochs, batch_size=args.batch_size)
    _fit_components_to(embedder, len(Xg), size[0] * size[1] * (1 if color == "grayscale" else 3))
    rows = [
        _evaluate("raw pixels", [ImagePreprocessor(size=size, color_mode=color)], data),
        _evaluate(args.embedder, [ImagePreprocessor(size=size, color_mode=color), embedder], data),
    ]
    print(_metrics_table(rows))


def _cmd_demo(args):
    from sklearn.decomposition import PCA

    from . import AutoencoderEmbedder, ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    from .plotting import plot_retrieval

    Xg, yg, Xq, yq, size = _labelled_dataset("digits")
    data = (Xg, yg, Xq, yq)
    print(f"digits: {len(Xg)} gallery images, {len(Xq)} queries, resized to {size[0]}x{size[1]}", file=sys.stderr)
    autoencoder = AutoencoderEmbedder(architecture="conv", latent_dim=32, epochs=args.epochs, random_state=0)
    rows = [
        _evaluate("raw pixels", [ImagePreprocessor(size=size)], data),
        _evaluate("PCA-32", [ImagePreprocessor(size=size), PCA(32, random_state=0)], data),
        _evaluate(f"conv autoencoder ({args.epochs} epochs)", [ImagePreprocessor(size=size), autoencoder], data),
    ]
    print(_metrics_table(rows))
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=size), autoencoder, NearestImageRetriever(n_neighbors=8))
    pipe.fit(Xg, yg)
    shown = np.arange(0, len(Xq), len(Xq) // 6)[:6]
    distances, indices = pipe.kneighbors(Xq[shown])
    fig = plot_retrieval(Xq[shown], Xg, indices, distances, query_labels=yq[shown], gallery_labels=yg)
    fig.suptitle("digits: queries (left) and their conv-autoencoder neighbours", fontsize=10)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out}")


# ------------------------------------------------------------------- parser
def _embedder_arguments(parser, default="lite0"):
    parser.add_argument(
        "--embedder",
        default=default,
        help=f"{', '.join(EMBEDDERS)}, or a keras.applications backbone name such as "
        f"mobilenet_v3_small (ImageNet weights; downloaded once). Default: {default}.",
    )
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="resize images to H x W")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size of the embedder")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (autoencoder, vae)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="imgretrieval",
        description="Content-based image retrieval with scikit-learn estimators.",
        epilog="Try first: imgretrieval demo",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    Formatter = argparse.RawDescriptionHelpFormatter

    demo = commands.add_parser(
        "demo",
        help="retrieval on scikit-learn's digits, offline, with a picture",
        description="Index scikit-learn's bundled digits with raw pixels, PCA and a conv "
        "autoencoder, print retrieval metrics, and save a picture of queries and neighbours.",
        epilog="example:\n  imgretrieval demo --out demo.png",
        formatter_class=Formatter,
    )
    demo.add_argument("--out", default="imgretrieval-demo.png", help="PNG written (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=30, help="autoencoder epochs (default: %(default)s)")
    demo.set_defaults(run=_cmd_demo)

    index = commands.add_parser(
        "index",
        help="embed a folder of images and save a searchable index",
        description="Walk FOLDER recursively, embed every readable image (unreadable files are "
        "skipped with a warning) and save the fitted pipeline with the list of paths.",
        epilog="example:\n  imgretrieval index photos/ -o photos.joblib --embedder lite0",
        formatter_class=Formatter,
    )
    index.add_argument("folder", help="folder of images (subfolders are labels)")
    index.add_argument("-o", "--output", required=True, help="model file to write (.joblib)")
    index.add_argument("--metric", default="cosine", help="distance between embeddings (default: cosine)")
    _embedder_arguments(index)
    index.set_defaults(run=_cmd_index)

    query = commands.add_parser(
        "query",
        help="find the nearest indexed images of query images",
        description="Print each query image's nearest indexed images with their distances.",
        epilog="example:\n  imgretrieval query photos.joblib cat.jpg -k 5 --plot answers.png",
        formatter_class=Formatter,
    )
    query.add_argument("model", help="model file written by `imgretrieval index`")
    query.add_argument("images", nargs="+", help="query image files")
    query.add_argument("-k", type=int, default=5, help="neighbours per query (default: 5)")
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")
    query.add_argument("--plot", metavar="PNG", help="also save a picture of the answers")
    query.set_defaults(run=_cmd_query)

    evaluate = commands.add_parser(
        "evaluate",
        help="retrieval metrics of an embedder on a labelled image set",
        description="Gallery/query split of a labelled set (digits, fashion-mnist, or a folder whose "
        "subfolders are the labels); prints P@10, mAP@100 and 5-NN accuracy against raw pixels.",
        epilog="example:\n  imgretrieval evaluate --dataset digits --embedder pca",
        formatter_class=Formatter,
    )
    evaluate.add_argument("--dataset", default="digits", help="digits, fashion-mnist or a folder")
    _embedder_arguments(evaluate, default="pca")
    evaluate.set_defaults(run=_cmd_evaluate)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UsageError as exc:
        print(f"imgretrieval: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"imgretrieval: error: {message}", file=sys.stderr)
        return 2
    return 0
