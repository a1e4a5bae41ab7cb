"""``imgretrieval demo``: retrieval on bundled images, offline, with a picture."""

import sys

import numpy as np

from ._common import check_figure_path, evaluate, labelled_dataset, metrics_table, positive_int, save_figure


def add_parser(commands, formatter):
    demo = commands.add_parser(
        "demo",
        help="retrieval on scikit-learn's digits, offline, with a picture",
        description="Index scikit-learn's bundled digits with raw pixels, PCA and a conv "
        "autoencoder, print retrieval metrics, and save a picture of queries and neighbours.",
        epilog="example:\n  imgretrieval demo --out demo.png",
        formatter_class=formatter,
    )
    demo.add_argument("--out", default="imgretrieval-demo.png", help="PNG written (default: %(default)s)")
    demo.add_argument("--epochs", type=positive_int, default=30, help="autoencoder epochs (default: %(default)s)")
    demo.set_defaults(run=run)


def run(args):
    from sklearn.decomposition import PCA

    from .. import AutoencoderEmbedder, ImagePreprocessor, NearestImageRetriever, make_retrieval_pipeline
    from ..plotting import plot_retrieval

    check_figure_path(args.out)
    Xg, yg, Xq, yq, size = labelled_dataset("digits")
    data = (Xg, yg, Xq, yq)
    print(f"digits: {len(Xg)} gallery images, {len(Xq)} queries, resized to {size[0]}x{size[1]}", file=sys.stderr)
    autoencoder = AutoencoderEmbedder(architecture="conv", latent_dim=32, epochs=args.epochs, random_state=0)
    rows = [
        evaluate("raw pixels", [ImagePreprocessor(size=size)], data),
        evaluate("PCA-32", [ImagePreprocessor(size=size), PCA(32, random_state=0)], data),
        evaluate(f"conv autoencoder ({args.epochs} epochs)", [ImagePreprocessor(size=size), autoencoder], data),
    ]
    print(metrics_table(rows))
    pipe = make_retrieval_pipeline(ImagePreprocessor(size=size), autoencoder, NearestImageRetriever(n_neighbors=8))
    pipe.fit(Xg, yg)
    shown = np.arange(0, len(Xq), len(Xq) // 6)[:6]
    distances, indices = pipe.kneighbors(Xq[shown])
    fig = plot_retrieval(Xq[shown], Xg, indices, distances, query_labels=yq[shown], gallery_labels=yg)
    fig.suptitle("digits: queries (left) and their conv-autoencoder neighbours", fontsize=10)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
