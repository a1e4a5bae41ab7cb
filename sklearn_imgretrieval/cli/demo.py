"""``imgretrieval demo``: near-duplicate photos found by a pretrained CNN, offline, with a picture."""

import sys
import time

import numpy as np

from ._common import metrics_table

#: The queries of the picture: (photo, edit), one of each kind of edit.
_SHOWN = (
    ("chelsea", "flip"),
    ("coffee", "jpeg_25"),
    ("rocket", "crop"),
    ("astronaut", "rotate_5"),
    ("china", "half_size"),
    ("hubble_deep_field", "brighter"),
)
_N_COPIES = 6  # each photo has 6 copies: at best the 6 nearest others are all relevant


def add_parser(commands, formatter):
    demo = commands.add_parser(
        "demo",
        help="find edited copies of bundled photos with a pretrained CNN, offline, with a picture",
        description="The photos bundled with scikit-image and scikit-learn, 6 edited copies of each "
        "(crop, half size, JPEG quality 25, 5-degree rotation, mirror, +30%% brightness) and "
        "unrelated distractors, indexed with raw pixels and with EfficientNet-Lite0 (ImageNet "
        "weights bundled): a table of how often each finds the copies, and a picture of queries "
        "and their nearest neighbours with distances.",
        epilog="example:\n  imgretrieval demo --out demo.png",
        formatter_class=formatter,
    )
    demo.add_argument("--out", default="imgretrieval-demo.png", help="PNG written (default: %(default)s)")
    demo.set_defaults(run=run)


def _scores(groups, neighbour_groups, is_query):
    """P@6, mAP@6 and top-1 accuracy of the copies' leave-one-out neighbours."""
    from ..metrics import knn_accuracy, mean_average_precision, precision_at_k

    y, ranked = groups[is_query], neighbour_groups[is_query]
    return {
        "precision@6": precision_at_k(y, ranked),
        "map@6": mean_average_precision(y, ranked),
        "knn_accuracy@1": knn_accuracy(y, ranked, k=1),
    }


def _picture(images, groups, titles, answers):
    """The same queries answered by each pipeline, side by side: what the table's numbers look like."""
    import matplotlib.pyplot as plt

    from ..plotting import plot_retrieval

    shown = [titles.index(f"{photo}, {edit}") for photo, edit in _SHOWN]
    n_cols = _N_COPIES + 2  # the query and its 7 nearest others
    fig = plt.figure(figsize=(1.4 * n_cols * len(answers), 1.5 * len(shown) + 0.6))
    for panel, (name, (distances, indices)) in zip(fig.subfigures(1, len(answers), wspace=0.05), answers.items()):
        plot_retrieval(
            [images[i] for i in shown],
            images,
            indices[shown],
            distances[shown],
            query_labels=groups[shown],
            gallery_labels=groups,
            query_titles=[titles[i].replace(", ", "\n") for i in shown],
            ax=panel.add_subplot(),
        )
        panel.suptitle(f"by {name}", fontsize=11)
    fig.text(
        0.5,
        0.0,
        "queries (left of each half) and their 7 nearest other images, cosine distance above each; "
        "green: a copy of the same photo, red: another image",
        ha="center",
        va="bottom",
        fontsize=9,
    )
    return fig


def run(args):
    args.outputs.check([("--out", args.out)], figures=[args.out])
    from .. import ImagePreprocessor, NearestImageRetriever, PretrainedCNNEmbedder, make_retrieval_pipeline
    from ..datasets import load_sample_photos, make_near_duplicates

    photos, names = load_sample_photos()
    distractors, distractor_names = load_sample_photos("distractors")
    images, groups, edits = make_near_duplicates(photos, random_state=0)
    images = images + distractors
    groups = np.concatenate([groups, -1 - np.arange(len(distractors))])  # each distractor alone
    titles = [f"{names[g]}, {edit}" for g, edit in zip(groups, edits)] + distractor_names
    is_query = groups >= 0
    print(
        f"{len(photos)} photos, {len(edits) // len(photos) - 1} edited copies of each, "
        f"{len(distractors)} unrelated images: {len(images)} images; each queries the rest",
        file=sys.stderr,
    )
    pipelines = {
        "raw pixels 32x32": make_retrieval_pipeline(
            ImagePreprocessor(size=(32, 32), crop="center"), NearestImageRetriever(metric="cosine")
        ),
        "EfficientNet-Lite0, ImageNet": make_retrieval_pipeline(
            ImagePreprocessor(size=(224, 224), crop="center", n_jobs=-1),
            PretrainedCNNEmbedder(),
            NearestImageRetriever(metric="cosine"),
        ),
    }
    rows, answers = [], {}
    for name, pipe in pipelines.items():
        started = time.perf_counter()
        pipe.fit(images, groups)  # a pretrained network: nothing is trained
        # each image against the others; one more than the copies, to show the nearest other image
        distances, indices = pipe.kneighbors(n_neighbors=_N_COPIES + 1)
        rows.append((name, _scores(groups, groups[indices[:, :_N_COPIES]], is_query), time.perf_counter() - started))
        answers[name] = distances, indices
    print(metrics_table(rows))
    fig = _picture(images, groups, titles, answers)
    args.outputs.save_figure(fig, args.out)
    print(f"wrote {args.out}")
