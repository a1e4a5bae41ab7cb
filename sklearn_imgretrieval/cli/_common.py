"""What the subcommands share: the usage error, argument types, progress
bars, embedder settings, folder listing and the metrics table. Only light
modules are imported here; Keras comes with the first embedder a command
builds. What a command writes goes through ``_outputs``.
"""

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .. import embedders

EMBEDDERS = ("lite0", "autoencoder", "vae", "pca")


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


def check_enough_images(embedder_name, n_images, where):
    """A learned embedder cannot learn anything from a single image."""
    if embedder_name in embedders.LEARNED_EMBEDDERS and n_images < 2:
        raise UsageError(
            f"--embedder {embedder_name} learns from the images themselves and needs at least 2; "
            f"{where} has {n_images}. Use --embedder lite0 (pretrained, no training) for so few images."
        )


@contextlib.contextmanager
def printed_warnings():
    """Print the library's warnings as one ``imgretrieval: warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # other packages' notices to their developers, such as faiss-cpu 1.11's SWIG types
        # on import, are hidden as Python hides them by default
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            yield
        finally:
            for warning in caught:
                print(f"imgretrieval: warning: {warning.message}", file=sys.stderr)


@contextlib.contextmanager
def progress_bars():
    """A ``progress(stage, done, total)`` callback drawing one tqdm bar per stage on stderr."""
    from tqdm import tqdm

    bars = {}

    def progress(stage, done, total):
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=f"{stage:<9}", unit="image", file=sys.stderr, disable=None)
        bar = bars[stage]
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()


def embedder_settings(args, stored=None):
    """The embedder's settings: the options given, else ``stored`` (an index's), else the defaults.

    With ``stored``, an option that differs from it is an error: an index
    must embed every image the same way.
    """
    given = {
        "embedder": args.embedder,
        "size": None if args.size is None else list(args.size),
        "color": args.color,
        "dims": args.dims,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
    }
    if stored is not None:
        for key, value in given.items():
            if value is not None and key in stored and stored[key] != value:
                option = "--" + key.replace("_", "-")
                raise UsageError(
                    f"the index was built with {option} {_shown(stored[key])}, not {_shown(value)}; an update must "
                    f"embed like the index did. Leave {option} out, or build a new index without --update."
                )
        return {key: stored.get(key, value) for key, value in given.items()}
    name = given["embedder"] or "lite0"
    defaults = embedders.embedder_defaults(name)
    defaults["size"] = list(defaults["size"])  # as the index's settings store it
    settings = {"embedder": name, **{key: given[key] if given[key] is not None else defaults[key] for key in defaults}}
    settings["epochs"] = given["epochs"] or embedders.DEFAULT_EPOCHS
    settings["batch_size"] = given["batch_size"]
    return settings


def _shown(value):
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def make_embedder(settings, random_state=0):
    """The embedder the settings of :func:`embedder_settings` stand for."""
    return embedders.make_embedder(
        settings["embedder"],
        dims=settings["dims"],
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        random_state=random_state,
    )


def make_preprocessor(settings):
    from .. import ImagePreprocessor

    return ImagePreprocessor(size=tuple(settings["size"]), color_mode=settings["color"], n_jobs=-1)


def fit_components_to(embedder, n_samples, n_features):
    """Lower PCA's components to what a small folder allows."""
    if hasattr(embedder, "n_components"):
        embedder.set_params(n_components=min(embedder.n_components, n_samples, n_features))
    return embedder


def list_folder(folder, verify=True, label_from="top"):
    """Paths, labels and class names of the images of ``folder``; with ``verify``
    only the readable ones, the others named in one warning."""
    from .._image_io import IMAGE_EXTENSIONS
    from ..datasets import load_image_folder

    if not Path(folder).is_dir():
        raise UsageError(f"{folder} is not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = load_image_folder(folder, verify=verify, n_jobs=-1, label_from=label_from)
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


def embedder_arguments(parser):
    """The options that say how images are embedded, with their defaults in --help."""
    group = parser.add_argument_group("embedding (defaults depend on --embedder)")
    group.add_argument(
        "--embedder",
        help=f"{', '.join(EMBEDDERS)}, or a keras.applications backbone name such as mobilenet_v3_small "
        "(ImageNet weights, downloaded once). Default: lite0, EfficientNet-Lite0 with its bundled "
        "ImageNet weights (offline, nothing to train)",
    )
    group.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        help="resize images to H x W. Default: 224 224 for lite0 and backbones, 64 64 for pca, autoencoder, vae",
    )
    group.add_argument(
        "--color",
        choices=("rgb", "grayscale"),
        help="colour of the images the embedder sees. Default: rgb for lite0 and backbones, grayscale for the others",
    )
    group.add_argument(
        "--dims",
        type=positive_int,
        help="size of the embedding of pca, autoencoder and vae. Default: 64, 64 and 32 "
        "(lite0 gives 1280, fixed by the network)",
    )
    group.add_argument(
        "--batch-size",
        type=positive_int,
        help="images per batch through the network. Default: the embedder's own (32 for lite0, 128 for the others)",
    )
    group.add_argument("--epochs", type=positive_int, help="training epochs of autoencoder and vae. Default: 10")


# ------------------------------------------------------------ printed paths
#: Characters the shell gives a meaning to, which GNU ls's shell-escape quoting quotes ("#" and "~" only first).
_SHELL_SPECIAL = frozenset(" !\"$&'()*;<=>?[\\^`|")
#: Characters GNU ls escapes by name inside $'...'; other unprintable ones are octal bytes.
_NAMED_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r"}


def _unprintable(char):
    import unicodedata

    # What glibc's iswprint refuses: controls, line and paragraph separators, unassigned code
    # points, and the surrogates that stand for bytes of a file name that are not UTF-8.
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cn", "Cs")


def _octal_bytes(char):
    try:
        data = char.encode("utf-8", "surrogateescape")  # a byte of a name that is not UTF-8: that byte
    except UnicodeEncodeError:
        data = char.encode("utf-8", "surrogatepass")
    return "".join(f"\\{byte:03o}" for byte in data)


def shown_path(path):
    """A path as GNU ``ls`` shows it in a terminal (its shell-escape quoting): on one line, and pasteable.

    Names that need nothing are shown as they are; names with spaces or shell
    characters are quoted (``'a b.jpg'``, ``"it's.jpg"``), and control
    characters are escaped (``'a'$'\\n''b.jpg'``), so that a file name cannot
    break a table into lines or move the terminal's cursor. Every command
    that prints paths in a table (query's answers, dedupe's groups) prints
    them through this.
    """
    import os

    name = os.fspath(path)
    if not name:
        return "''"
    if not any(map(_unprintable, name)):
        special = any(char in _SHELL_SPECIAL for char in name) or name[0] in "#~"
        if not special:
            return name
        if "'" in name and not any(char in '"$`\\!' for char in name):
            return f'"{name}"'
        return "'" + name.replace("'", "'\\''") + "'"
    # Quoted text, with each run of unprintable characters as a $'...' escape between the quotes.
    shown, escaping = ["'"], False
    for char in name:
        if _unprintable(char):
            if not escaping:
                shown.append("'$'")
            shown.append(_NAMED_ESCAPES.get(char) or _octal_bytes(char))
            escaping = True
        elif char == "'":  # closes the quotes (or the escape), adds \' and opens them again, as ls does
            shown.append("'\\''")
            escaping = False
        else:
            shown.append(("''" if escaping else "") + char)  # after an escape: close it, open quotes
            escaping = False
    shown.append("'")
    return "".join(shown)


def cluster_arguments(parser, what):
    """--scheduler / --workers: where the shards of a sharded index are held while ``what``."""
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler", metavar="ADDRESS", help=f"hold a sharded index's shards on this Dask cluster while {what}"
    )
    cluster.add_argument(
        "--workers", type=positive_int, metavar="N", help=f"... on a local Dask cluster of N processes while {what}"
    )
