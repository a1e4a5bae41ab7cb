"""What the subcommands share: the usage error, argument types, output files,
progress bars, embedder names, folder listing and the metrics table. Only
light modules are imported here; Keras comes with the first embedder a
command builds.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .._files import atomic_write, check_output_path

EMBEDDERS = ("lite0", "autoencoder", "vae", "pca")
#: Embedders that learn from the folder itself, and so need more than one image.
LEARNED_EMBEDDERS = ("autoencoder", "vae", "pca")
_CHUNK = 256  # images decoded or embedded between two progress updates

#: Files written by this run, named in the message after Ctrl-C.
written = []


class UsageError(Exception):
    """A problem with the user's input: reported with its message, exit status 2."""


def positive_int(text):
    """argparse type: an integer of at least 1 (0 would be silently meaningless)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_figure_path(path):
    """Check a picture's path before any work: writable, and a format matplotlib writes."""
    from ..plotting import _pyplot

    check_output_path(path)
    _pyplot()  # a missing matplotlib is reported now, not after the work
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        raise UsageError(
            f"{path}: matplotlib cannot write {'.' + suffix if suffix else 'files without an extension'}; "
            f"name the picture with one of {', '.join('.' + name for name in sorted(formats))}."
        )


def save_figure(fig, path):
    """Write ``fig`` to ``path`` atomically, in the format its extension names."""
    with atomic_write(path) as file:
        fig.savefig(file, format=Path(path).suffix.lower().lstrip("."), dpi=100, bbox_inches="tight")
    written.append(str(path))


def save_index(index, path):
    """Write an ImageIndex in the safe format, atomically."""
    from ..persistence import save

    save(index, path)
    written.append(str(path))


def check_enough_images(embedder_name, n_images, where):
    """A learned embedder cannot learn anything from a single image."""
    if embedder_name in LEARNED_EMBEDDERS and n_images < 2:
        raise UsageError(
            f"--embedder {embedder_name} learns from the images themselves and needs at least 2; "
            f"{where} has {n_images}. Use --embedder lite0 (pretrained, no training) for so few images."
        )


def progress(done, total, label, started):
    """A one-line progress bar on stderr, redrawn in place on a terminal."""
    if not sys.stderr.isatty() and done < total:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.perf_counter() - started
    line = f"{label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:5.1f}s"
    end = "\n" if done >= total else ""
    print(("\r" if sys.stderr.isatty() else "") + line, end=end, file=sys.stderr, flush=True)


def in_chunks(function, items, label):
    """``function`` over ``items`` in chunks, stacked, with a progress bar."""
    started = time.perf_counter()
    parts = []
    for start in range(0, len(items), _CHUNK):
        parts.append(function(items[start : start + _CHUNK]))
        progress(min(start + _CHUNK, len(items)), len(items), label, started)
    return np.concatenate(parts)


def make_embedder(name, *, epochs, batch_size, random_state=0):
    """The embedder a command-line name stands for."""
    if name == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=64, random_state=random_state)
    if name in ("autoencoder", "vae"):
        from .. import AutoencoderEmbedder, VAEEmbedder

        cls = AutoencoderEmbedder if name == "autoencoder" else VAEEmbedder
        params = dict(latent_dim=64 if name == "autoencoder" else 32, epochs=epochs, random_state=random_state)
        if batch_size:
            params["batch_size"] = batch_size
        return cls(architecture="conv", **params)
    from .. import PretrainedCNNEmbedder

    params = {"batch_size": batch_size} if batch_size else {}
    if name == "lite0":
        return PretrainedCNNEmbedder(**params)
    return PretrainedCNNEmbedder(backbone=name, weights="imagenet", **params)


def fit_components_to(embedder, n_samples, n_features):
    """Lower PCA's 64 components to what a small folder allows."""
    if hasattr(embedder, "n_components"):
        embedder.set_params(n_components=min(embedder.n_components, n_samples, n_features))
    return embedder


def default_size(embedder_name):
    return (64, 64) if embedder_name in ("pca", "autoencoder", "vae") else (224, 224)


def color_mode(embedder_name):
    return "grayscale" if embedder_name in ("pca", "autoencoder", "vae") else "rgb"


def list_folder(folder):
    """Paths, labels and class names of the readable images of ``folder``; the
    unreadable ones are named in one warning."""
    from .._image_io import IMAGE_EXTENSIONS
    from ..datasets import load_image_folder

    if not Path(folder).is_dir():
        raise UsageError(f"{folder} is not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = load_image_folder(folder, verify=True, n_jobs=-1)
        except ValueError:  # the folder exists, so: no readable image in it
            found = None
    for warning in caught:
        print(f"imgretrieval: warning: {warning.message}", file=sys.stderr)
    if found is None:
        raise UsageError(
            f"No readable image files in {folder}: looked for {', '.join(IMAGE_EXTENSIONS)} files, in subfolders too."
        )
    return found


def labelled_dataset(name):
    """(gallery, gallery labels, queries, query labels, size) of an evaluation set."""
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from ..datasets import load_digits_images

        images, labels = load_digits_images()
        Xg, Xq, yg, yq = train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)
        return Xg, yg, Xq, yq, (16, 16)
    if name == "fashion-mnist":
        from ..datasets import load_fashion_mnist

        Xg, yg = load_fashion_mnist("train")
        Xq, yq = load_fashion_mnist("test")
        return Xg, yg, Xq, yq, (28, 28)
    paths, labels, _ = list_folder(name)
    if len(paths) < 2:
        raise UsageError(
            f"{name} has {len(paths)} image; evaluate splits a folder into gallery images and "
            "queries, so it needs at least 2 (and a few per subfolder to mean much)."
        )
    paths = np.asarray(paths, dtype=object)
    stratify = labels if np.bincount(labels).min() >= 2 else None
    Pg, Pq, yg, yq = train_test_split(paths, labels, test_size=0.25, stratify=stratify, random_state=0)
    return list(Pg), yg, list(Pq), yq, None


def metrics_table(rows):
    """Rows of (name, evaluate_retrieval's dict, seconds) as a text table.

    The cut-offs come from the keys: on a gallery smaller than 10 or 100
    images, evaluate_retrieval lowers them to the gallery's size.
    """
    keys = [
        next(key for key in rows[0][1] if key.startswith(prefix)) for prefix in ("precision@", "map@", "knn_accuracy@")
    ]
    titles = [f"P@{keys[0][10:]}", f"mAP@{keys[1][4:]}", f"{keys[2][13:]}-NN acc"]
    header = f"{'embedding':<28} {titles[0]:>7} {titles[1]:>8} {titles[2]:>9} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for name, scores, seconds in rows:
        values = " ".join(f"{scores[key]:>{width}.3f}" for key, width in zip(keys, (7, 8, 9)))
        lines.append(f"{name:<28} {values} {seconds:>8.1f}")
    return "\n".join(lines)


def evaluate(name, steps, data):
    """One row of the metrics table: a pipeline of ``steps`` and a cosine retriever."""
    from .. import NearestImageRetriever, make_retrieval_pipeline
    from ..evaluation import evaluate_retrieval

    Xg, yg, Xq, yq = data
    started = time.perf_counter()
    pipe = make_retrieval_pipeline(*steps, NearestImageRetriever(metric="cosine"))
    scores = evaluate_retrieval(pipe, Xg, yg, Xq, yq, k=10, map_k=100, knn_k=5)
    return name, scores, time.perf_counter() - started


def embedder_arguments(parser, default="lite0"):
    parser.add_argument(
        "--embedder",
        default=default,
        help=f"{', '.join(EMBEDDERS)}, or a keras.applications backbone name such as "
        f"mobilenet_v3_small (ImageNet weights; downloaded once). Default: {default}.",
    )
    parser.add_argument("--size", nargs=2, type=positive_int, metavar=("H", "W"), help="resize images to H x W")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="batch size of the embedder")
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs (autoencoder, vae)")
