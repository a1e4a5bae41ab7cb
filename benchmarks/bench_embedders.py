"""Keras embedders on the Fashion-MNIST retrieval protocol.

Gallery = the 60,000 training images, queries = the 10,000 test images,
relevant = same label. For each embedder: P@10, mAP@100 and 5-NN accuracy
(cosine and euclidean), the adjusted Rand index of KMeans with 10 clusters
on the 10,000 query embeddings against their labels, the training
minutes, epochs and seconds per epoch, transform images per second and the
peak memory of the process that fitted it, beside raw pixels and PCA-64.
Each embedder runs in a fresh process so that timings and memory are its own.

The overhead columns compare the estimator with the same Keras network
driven by hand: ``model.fit`` for the same number of epochs on the same
split (90 % train, 10 % validation), and ``model.predict`` on the same
fitted encoder.

Run (about 30 minutes on 2 cores, plus the contrastive row's 45)::

    python benchmarks/bench_embedders.py
    python benchmarks/bench_embedders.py --quick     # a smoke run on 3,000 images
    python benchmarks/bench_embedders.py --only 'raw pixels' contrastive

``--epochs`` sets the epochs of the autoencoders; the contrastive row
trains for its own ``CONTRASTIVE_EPOCHS``, the number that fits the
45-minute budget of issue 14 on this machine.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _common import best_time

EMBEDDERS = {
    "raw pixels": "FunctionTransformer()",
    "PCA-64": "PCA(n_components=64, random_state=0)",
    "dense AE 256-128-64": "AutoencoderEmbedder(latent_dim=64, hidden_units=(256, 128), random_state=0)",
    "conv AE 32-64, dense 64": (
        "AutoencoderEmbedder(architecture='conv', latent_dim=64, hidden_units=(), random_state=0)"
    ),
    "conv VAE 32-64-256, latent 32": (
        "VAEEmbedder(latent_dim=32, architecture='conv', hidden_units=(256,), random_state=0)"
    ),
    "conv VAE 32-64-256, latent 32, beta 0.5": (
        "VAEEmbedder(latent_dim=32, beta=0.5, architecture='conv', hidden_units=(256,), random_state=0)"
    ),
    "contrastive": "ContrastiveEmbedder(random_state=0)",
}
#: Epochs of the contrastive row (see the module docstring).
CONTRASTIVE_EPOCHS = 15
REFERENCE_P10 = {"PCA-64": 0.815, "dense AE 256-128-64": 0.820, "conv AE 32-64, dense 64": 0.830}
TARGET_P10 = {
    "contrastive": 0.835,
    "dense AE 256-128-64": 0.82,
    "conv AE 32-64, dense 64": 0.83,
    "conv VAE 32-64-256, latent 32": 0.80,
    "conv VAE 32-64-256, latent 32, beta 0.5": 0.80,
}


def _load(quick):
    import numpy as np

    from sklearn_imgretrieval.datasets import load_fashion_mnist

    xg, yg = load_fashion_mnist("train")
    xq, yq = load_fashion_mnist("test")
    if quick:
        xg, yg, xq, yq = xg[:3000], yg[:3000], xq[:500], yq[:500]
    rows = lambda x: (x.reshape(len(x), -1) / 255.0).astype(np.float32)  # noqa: E731
    return rows(xg), yg, rows(xq), yq


def _retrieval(zg, yg, zq, yq):
    from sklearn_imgretrieval import NearestImageRetriever
    from sklearn_imgretrieval.metrics import knn_accuracy, mean_average_precision, precision_at_k

    scores = {}
    for metric in ("cosine", "euclidean"):
        retriever = NearestImageRetriever(n_neighbors=100, metric=metric).fit(zg)
        labels = yg[retriever.kneighbors(zq, return_distance=False)]
        scores[metric] = (
            precision_at_k(yq, labels, 10),
            mean_average_precision(yq, labels, 100),
            knn_accuracy(yq, labels, 5),
        )
    return scores


def _direct_training_model(embedder, n_features):
    """The embedder's network, freshly built and compiled as a user of Keras would."""
    import keras

    from sklearn_imgretrieval.embedders._layers import GaussianSampling
    from sklearn_imgretrieval.embedders._vae import VAEEmbedder, summed_reconstruction_loss

    twin = embedder.__class__(**embedder.get_params())
    twin.n_features_in_, twin.image_shape_ = embedder.n_features_in_, embedder.image_shape_
    twin._output_activation = embedder._output_activation
    twin._build_models(seed=0)
    inputs = keras.Input((n_features,))
    if isinstance(embedder, VAEEmbedder):
        outputs = twin.decoder_(GaussianSampling(embedder.beta, seed=0)(twin.encoder_(inputs)))
        loss = summed_reconstruction_loss(embedder.loss, n_features)
    else:
        outputs = twin.decoder_(twin.encoder_(inputs))
        loss = embedder.loss
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(embedder.learning_rate), loss=loss)
    return model


def worker(name, epochs, quick, contrastive_epochs=CONTRASTIVE_EPOCHS):
    """Fit and measure one embedder; print one JSON line."""
    from sklearn.base import clone
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA  # noqa: F401 (used by eval of EMBEDDERS)
    from sklearn.metrics import adjusted_rand_score
    from sklearn.preprocessing import FunctionTransformer  # noqa: F401

    from sklearn_imgretrieval import AutoencoderEmbedder, ContrastiveEmbedder, VAEEmbedder  # noqa: F401

    xg, yg, xq, yq = _load(quick)
    estimator = eval(EMBEDDERS[name])
    keras_embedder = hasattr(estimator, "epochs")
    autoencoder = isinstance(estimator, AutoencoderEmbedder)  # and the VAE
    if keras_embedder:
        estimator.set_params(epochs=epochs if autoencoder or quick else contrastive_epochs)
    started = time.perf_counter()
    estimator.fit(xg)
    fit_seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    zg = estimator.transform(xg)
    transform_seconds = best_time(lambda: estimator.transform(xq))
    zq = estimator.transform(xq)
    clusters = KMeans(n_clusters=10, n_init=4, random_state=0).fit_predict(zq)
    result = {
        "name": name,
        "scores": _retrieval(zg, yg, zq, yq),
        "kmeans_ari": adjusted_rand_score(yq, clusters),
        "fit_seconds": fit_seconds,
        "peak_mb": peak_mb,
        "transform_ips": len(xq) / transform_seconds,
    }
    if keras_embedder:
        result["epochs_run"] = estimator.n_iter_
        result["seconds_per_epoch"] = fit_seconds / estimator.n_iter_
        result["loss"] = (estimator.history_["loss"][0], estimator.history_["loss"][-1])
    if autoencoder:
        # Overhead against plain Keras: 2 epochs each, same split, same batch size.
        short = clone(estimator).set_params(epochs=2, early_stopping=False)
        ours = best_time(lambda: short.fit(xg), repeats=1) / 2
        model = _direct_training_model(estimator, xg.shape[1])
        direct = (
            best_time(
                lambda: model.fit(xg, xg, batch_size=estimator.batch_size, epochs=2, validation_split=0.1, verbose=0),
                repeats=1,
            )
            / 2
        )
        encoder = estimator.encoder_
        direct_predict = best_time(lambda: encoder.predict(xq, batch_size=estimator.batch_size, verbose=0))
        result.update(
            epoch_ours=ours,
            epoch_direct=direct,
            predict_ips_direct=len(xq) / direct_predict,
        )
    print(json.dumps(result))


def _table(results, command):
    lines = [
        f"$ {command}",
        "",
        "| embedder | P@10 cos | mAP@100 cos | 5-NN cos | P@10 euc | mAP@100 euc | 5-NN euc | KMeans ARI "
        "| train min | epochs | s/epoch | s/epoch ours vs plain Keras (2 ep.) | transform img/s ours vs predict "
        "| peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cos, euc = r["scores"]["cosine"], r["scores"]["euclidean"]
        minutes = f"{r['fit_seconds'] / 60:.1f}"
        epochs, per_epoch, overhead = "-", f"fit {r['fit_seconds']:.1f}", "-"
        throughput = f"{r['transform_ips']:.0f}"
        if "epochs_run" in r:
            epochs, per_epoch = str(r["epochs_run"]), f"{r['seconds_per_epoch']:.1f}"
        if "epoch_ours" in r:
            overhead = f"{r['epoch_ours']:.1f} / {r['epoch_direct']:.1f} = {r['epoch_ours'] / r['epoch_direct']:.2f}x"
            throughput = (
                f"{r['transform_ips']:.0f} / {r['predict_ips_direct']:.0f} = "
                f"{r['transform_ips'] / r['predict_ips_direct']:.2f}x"
            )
        lines.append(
            f"| {r['name']} | {cos[0]:.3f} | {cos[1]:.3f} | {cos[2]:.3f} | {euc[0]:.3f} | {euc[1]:.3f} "
            f"| {euc[2]:.3f} | {r['kmeans_ari']:.3f} | {minutes} | {epochs} | {per_epoch} | {overhead} "
            f"| {throughput} | {r['peak_mb']:.0f} |"
        )
    lines.append("")
    for r in results:
        target = TARGET_P10.get(r["name"])
        reference = REFERENCE_P10.get(r["name"])
        note = f"{r['name']}: P@10 cosine {r['scores']['cosine'][0]:.3f}, KMeans ARI {r['kmeans_ari']:.3f}"
        if "loss" in r:
            note += f", loss {r['loss'][0]:.2f} -> {r['loss'][1]:.2f}"
        if reference is not None:
            note += f" (plain Keras/sklearn reference {reference:.3f})"
        if target is not None:
            note += f", target >= {target:.3f}: {'met' if r['scores']['cosine'][0] >= target else 'NOT met'}"
        lines.append(note)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3,000 gallery images, 2 epochs")
    parser.add_argument("--only", nargs="+", choices=list(EMBEDDERS), help="run only these")
    parser.add_argument(
        "--contrastive-epochs", type=int, default=CONTRASTIVE_EPOCHS, help="epochs of the contrastive row"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    if args.worker:
        worker(args.worker, epochs, args.quick, args.contrastive_epochs)
        return
    results = []
    for name in args.only or EMBEDDERS:
        command = [sys.executable, __file__, "--worker", name, "--epochs", str(epochs)]
        command += ["--contrastive-epochs", str(args.contrastive_epochs)]
        command += ["--quick"] if args.quick else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        scores = results[-1]["scores"]["cosine"]
        print(f"done: {name}: P@10 cosine {scores[0]:.3f}", file=sys.stderr, flush=True)
    shown = "python benchmarks/bench_embedders.py" + (" --quick" if args.quick else "")
    if args.only:
        shown += " --only " + " ".join(repr(n) for n in args.only)
    if args.contrastive_epochs != CONTRASTIVE_EPOCHS:
        shown += f" --contrastive-epochs {args.contrastive_epochs}"
    print(_table(results, shown))


if __name__ == "__main__":
    main()
