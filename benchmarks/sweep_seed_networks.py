"""Sweep the settings of the autoencoders (and any transformer) on digits and Fashion-MNIST subsets.

Each estimator, given as a Python expression, is fitted (without labels)
on the gallery; printed: P@10 and 5-NN accuracy of cosine neighbours
(relevant = same label), the adjusted Rand index of KMeans (10 clusters)
on the query embeddings, and the seconds the fit took. Data sets:

- ``digits``: scikit-learn's 1,797 8x8 digits; gallery = the first 1,200,
  queries = the other 597.
- ``fashion``: Fashion-MNIST; gallery = the first ``--n-train`` training
  images (10,000), queries = the first ``--n-query`` test images (5,000).
- ``fashion-full``: the full protocol, 60,000 / 10,000.

Run::

    python benchmarks/sweep_seed_networks.py --data digits raw "PCA(16)" "AutoencoderEmbedder(latent_dim=16)"
    python benchmarks/sweep_seed_networks.py --data fashion "VAEEmbedder(beta=0.5, random_state=0)"
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _common import retrieval_scores


def load(data, n_train, n_query):
    from sklearn_imgretrieval.datasets import load_digits_images, load_fashion_mnist

    if data == "digits":
        images, labels = load_digits_images()
        images = images[:, :, :, None]
        return images[:1200], labels[:1200], images[1200:], labels[1200:]
    xg, yg = load_fashion_mnist("train")
    xq, yq = load_fashion_mnist("test")
    if data == "fashion":
        xg, yg, xq, yq = xg[:n_train], yg[:n_train], xq[:n_query], yq[:n_query]
    images = lambda x: x[:, :, :, None].astype(np.float32) / 255  # noqa: E731
    return images(xg), yg, images(xq), yq


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("estimators", nargs="+", help='Python expressions, or "raw" for raw pixels')
    parser.add_argument("--data", choices=["digits", "fashion", "fashion-full"], default="digits")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-query", type=int, default=5000)
    args = parser.parse_args()

    from sklearn.decomposition import PCA  # noqa: F401 (used by eval)

    from sklearn_imgretrieval import AutoencoderEmbedder, ContrastiveEmbedder, VAEEmbedder  # noqa: F401

    xg, yg, xq, yq = load(args.data, args.n_train, args.n_query)
    xg, xq = xg.reshape(len(xg), -1), xq.reshape(len(xq), -1)
    split = f"{args.data} {len(xg)} / {len(xq)}"
    for expression in args.estimators:
        started = time.perf_counter()
        if expression == "raw":
            zg, zq, epochs = xg, xq, "-"
        else:
            estimator = eval(expression).fit(xg)
            zg, zq = estimator.transform(xg), estimator.transform(xq)
            epochs = getattr(estimator, "n_iter_", "-")
        seconds = time.perf_counter() - started
        p10, knn, ari = retrieval_scores(zg, yg, zq, yq)
        print(f"| {expression} | {split} | {p10:.3f} | {knn:.3f} | {ari:.3f} | {epochs} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
