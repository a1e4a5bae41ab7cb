"""Inference on ONNX Runtime against Keras: photos per second, agreement, a new process's first embedding.

Three parts, each printed as a table:

1. Throughput: EfficientNet-Lite0 (ImageNet weights) at 224x224, batches of
   64, the same fitted embedder run with ``inference="keras"`` and
   ``"onnxruntime"`` in alternated rounds (the order swaps every round);
   photos per second are medians over rounds, and the ratio is taken round
   by round in the same run. The load average is printed before and after:
   other processes on the machine slow both runtimes, not always equally.
2. Agreement for every kind of network the library exports: largest
   absolute difference and smallest cosine between the two runtimes'
   embeddings of the same images, and how long the export took.
3. A new process that loads a saved Lite0 embedder (``sklearn_imgretrieval.load``)
   and embeds one photo, on each runtime: wall seconds of the whole process
   (medians of alternated runs), and whether Keras was imported.
4. Same neighbours: the demo's photos (the bundled photos and their edited
   copies) embedded by Lite0 at 224x224 on each runtime: the top-10
   neighbours of every photo, compared.
5. An index of a folder of JPEG photos end to end (``build_index``: decoding,
   resizing, embedding, adding), on each runtime in alternated runs, and
   where the time goes (decoding and resizing; embedding).

    python benchmarks/bench_inference.py
    python benchmarks/bench_inference.py --rounds 3 --runs 3   # quicker
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import load_photos, random_resized_crop

FIRST_EMBEDDING = r"""
import sys, time
marks = [time.perf_counter()]
import numpy as np
from sklearn_imgretrieval import load
import skops.io
marks.append(time.perf_counter())
embedder = load(sys.argv[1]).set_params(inference=sys.argv[2])
marks.append(time.perf_counter())
embedder.transform(np.load(sys.argv[3]))
marks.append(time.perf_counter())
print(*(f"{b - a:.3f}" for a, b in zip(marks, marks[1:])), "keras" in sys.modules)
"""
STAGES = ("import the library, NumPy and skops", "load the file", "embed 1 photo (Keras: import, build)")


def load_average():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def photo_batch(n_images, size, seed=0):
    """``n_images`` random crops of the bundled photos, float32 in [0, 1], (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    photos = load_photos()
    crops = [random_resized_crop(photos[i % len(photos)], (0.4, 1.0), (size, size), rng) for i in range(n_images)]
    return np.stack([np.asarray(crop, dtype=np.float32) / 255 for crop in crops])


def throughput(n_images, rounds):
    from sklearn_imgretrieval import PretrainedCNNEmbedder

    images = photo_batch(n_images, 224)
    embedder = PretrainedCNNEmbedder(batch_size=64).fit(images[:1])
    rates = {"keras": [], "onnxruntime": []}
    for runtime in rates:  # warm up: the first forward pass compiles (Keras) or allocates (ONNX Runtime)
        embedder.set_params(inference=runtime).transform(images[:64])
    print(f"load average before: {load_average()}")
    for number in range(rounds):
        order = ("keras", "onnxruntime") if number % 2 == 0 else ("onnxruntime", "keras")
        for runtime in order:
            embedder.set_params(inference=runtime)
            started = time.perf_counter()
            embedder.transform(images)
            rates[runtime].append(n_images / (time.perf_counter() - started))
    print(f"load average after:  {load_average()}\n")
    ratios = [o / k for o, k in zip(rates["onnxruntime"], rates["keras"])]
    print(f"Lite0 at 224x224, batches of 64, {n_images} photos, {rounds} alternated rounds; photos/s\n")
    print("| runtime | min | median | max |\n|---|---|---|---|")
    for runtime, values in rates.items():
        print(f"| {runtime} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} |")
    print(
        f"\nONNX Runtime / Keras, round by round: median {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)\n"
    )
    return embedder, images


def agreement(lite0, photos224):
    from sklearn_imgretrieval import AutoencoderEmbedder, ContrastiveEmbedder, PretrainedCNNEmbedder, VAEEmbedder

    gray = photo_batch(64, 28).mean(axis=3, keepdims=True)
    rgb64 = photos224[:32, ::4, ::4]  # 56x56
    labels = np.arange(32) % 4
    training = dict(epochs=2, batch_size=16, random_state=0)
    cases = {
        "PretrainedCNNEmbedder Lite0 ImageNet, avg, 224": (lite0, photos224[:32], None, False),
        "PretrainedCNNEmbedder Lite0 ImageNet, gem, 56 px resized to 224": (
            PretrainedCNNEmbedder(pooling="gem", batch_size=16),
            rgb64,
            None,
            True,
        ),
        "PretrainedCNNEmbedder Lite0 ImageNet, fine-tuned head": (
            PretrainedCNNEmbedder(fine_tune=True, input_size=64, **training),
            rgb64,
            labels,
            True,
        ),
        "PretrainedCNNEmbedder mobilenet_v3_small (weights=None), max": (
            PretrainedCNNEmbedder("mobilenet_v3_small", weights=None, pooling="max", batch_size=16, random_state=0),
            rgb64,
            None,
            True,
        ),
        "AutoencoderEmbedder dense": (AutoencoderEmbedder(16, **training), gray.reshape(64, -1), None, True),
        "AutoencoderEmbedder conv": (AutoencoderEmbedder(16, architecture="conv", **training), gray, None, True),
        "VAEEmbedder conv (posterior mean)": (VAEEmbedder(8, **training), gray, None, True),
        "ContrastiveEmbedder conv": (ContrastiveEmbedder(16, **training), gray, None, True),
        "ContrastiveEmbedder lite0": (
            ContrastiveEmbedder(16, encoder="lite0", input_size=64, **training),
            rgb64,
            None,
            True,
        ),
    }
    print("Agreement of ONNX Runtime with Keras (same images, same fitted network)\n")
    print("| embedder | images | max abs difference | min cosine | export s |\n|---|---|---|---|---|")
    for name, (embedder, images, labels, fit) in cases.items():
        if fit:
            embedder.fit(images, labels)
        started = time.perf_counter()
        embedder._export_inference_graph()  # timed again: fit exported it (or read it from the cache)
        export_seconds = time.perf_counter() - started
        on_onnxruntime = embedder.set_params(inference="onnxruntime").transform(images)
        on_keras = embedder.set_params(inference="keras").transform(images)
        cosine = np.sum(on_onnxruntime * on_keras, axis=1) / (
            np.linalg.norm(on_onnxruntime, axis=1) * np.linalg.norm(on_keras, axis=1)
        )
        print(
            f"| {name} | {len(images)} | {np.abs(on_onnxruntime - on_keras).max():.2e} | {cosine.min():.7f} "
            f"| {export_seconds:.2f} |"
        )
    print("\n(export s: a backbone with ImageNet weights comes from the disk cache after the first fit)\n")


def first_embedding(lite0, photos224, runs):
    from sklearn_imgretrieval import save

    with tempfile.TemporaryDirectory() as folder:
        path, image = Path(folder) / "lite0.skops", Path(folder) / "photo.npy"
        save(lite0.set_params(inference="auto"), path)
        np.save(image, photos224[:1])
        times = {"onnxruntime": [], "keras": []}
        stages = {runtime: [] for runtime in times}
        imported = {}
        for number in range(runs + 1):  # the first pair warms the file cache and is not counted
            order = list(times) if number % 2 == 0 else list(times)[::-1]
            for runtime in order:
                started = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-c", FIRST_EMBEDDING, str(path), runtime, str(image)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                if number:
                    times[runtime].append(time.perf_counter() - started)
                    stages[runtime].append([float(value) for value in out[:-1]])
                imported[runtime] = out[-1]
    print(f"A new process: load a saved Lite0 embedder, embed 1 photo ({runs} alternated runs; wall s)\n")
    print("| runtime | min | median | max | Keras imported |\n|---|---|---|---|---|")
    for runtime, values in times.items():
        print(
            f"| {runtime} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} "
            f"| {imported[runtime]} |"
        )
    ratio = statistics.median(times["keras"]) / statistics.median(times["onnxruntime"])
    print(f"\nKeras / ONNX Runtime: {ratio:.1f}x the time. Inside the process (medians, s):\n")
    print("| stage | onnxruntime | keras |\n|---|---|---|")
    for position, stage in enumerate(STAGES):
        medians = [statistics.median(run[position] for run in stages[runtime]) for runtime in times]
        print(f"| {stage} | {medians[0]:.2f} | {medians[1]:.2f} |")


def same_neighbours():
    from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, PretrainedCNNEmbedder
    from sklearn_imgretrieval.datasets import load_sample_photos, make_near_duplicates

    photos, _ = load_sample_photos()
    images, _, _ = make_near_duplicates(photos)
    pixels = ImagePreprocessor(size=(224, 224)).fit_transform(images)
    embedder = PretrainedCNNEmbedder().fit(pixels[:1])
    answers = {}
    for runtime in ("keras", "onnxruntime"):
        rows = embedder.set_params(inference=runtime).transform(pixels)
        retriever = NearestImageRetriever(n_neighbors=10, metric="cosine", algorithm="flat").fit(rows)
        answers[runtime] = retriever.kneighbors(return_distance=False)
    same = (answers["keras"] == answers["onnxruntime"]).all(axis=1)
    same_sets = [set(a) == set(b) for a, b in zip(answers["keras"], answers["onnxruntime"])]
    print(f"Top-10 neighbours of each of the demo's {len(images)} photos (Lite0, 224x224, cosine, exact)\n")
    print(f"identical lists: {same.sum()} of {len(same)}; identical sets: {sum(same_sets)} of {len(same)}\n")


def index_end_to_end(n_files, runs):
    from sklearn_imgretrieval import (
        ImagePreprocessor,
        NearestImageRetriever,
        PretrainedCNNEmbedder,
        make_retrieval_pipeline,
    )
    from sklearn_imgretrieval.indexing import build_index

    rng = np.random.default_rng(1)
    photos = load_photos()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for number in range(n_files):
            path = Path(folder) / f"{number:05d}.jpg"
            random_resized_crop(photos[number % len(photos)], (0.5, 1.0), (640, 480), rng).save(path, quality=90)
            paths.append(str(path))
        times = {"keras": [], "onnxruntime": []}
        decode, embed = [], {runtime: [] for runtime in times}
        preprocessor = ImagePreprocessor(size=(224, 224))
        for number in range(runs):
            order = list(times) if number % 2 == 0 else list(times)[::-1]
            for runtime in order:
                pipeline = make_retrieval_pipeline(
                    ImagePreprocessor(size=(224, 224)),
                    PretrainedCNNEmbedder(inference=runtime),
                    NearestImageRetriever(metric="cosine", algorithm="flat"),
                )
                started = time.perf_counter()
                build_index(paths, pipeline, fit_sample=8)
                times[runtime].append(time.perf_counter() - started)
            started = time.perf_counter()
            pixels = preprocessor.fit_transform(paths)
            decode.append(time.perf_counter() - started)
            for runtime in order:
                embedder = PretrainedCNNEmbedder(inference=runtime).fit(pixels[:1])
                started = time.perf_counter()
                embedder.transform(pixels)
                embed[runtime].append(time.perf_counter() - started)
    print(f"build_index of {n_files} JPEG photos (640x480) with Lite0 at 224x224, {runs} alternated runs; wall s\n")
    print("| runtime | build_index median | photos/s | of which: decode and resize | embed |\n|---|---|---|---|---|")
    for runtime, values in times.items():
        build = statistics.median(values)
        print(
            f"| {runtime} | {build:.1f} | {n_files / build:.1f} | {statistics.median(decode):.1f} "
            f"| {statistics.median(embed[runtime]):.1f} |"
        )
    ratios = [k / o for k, o in zip(times["keras"], times["onnxruntime"])]
    print(f"\nKeras / ONNX Runtime, run by run: median {statistics.median(ratios):.2f}x the time (target 1.4x)\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="photos per throughput round (default: 256)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated throughput rounds (default: 7)")
    parser.add_argument("--runs", type=int, default=5, help="alternated new-process runs (default: 5)")
    parser.add_argument("--files", type=int, default=512, help="photos of the index of part 5 (default: 512)")
    parser.add_argument("--parts", default="12345", help="which parts to run (default: all)")
    args = parser.parse_args()
    print("python benchmarks/bench_inference.py " + " ".join(sys.argv[1:]))
    print(f"{os.cpu_count()} cores; ", end="")
    import onnxruntime

    from sklearn_imgretrieval.embedders._keras import import_keras  # without TensorFlow's start-up notices

    keras = import_keras()
    print(f"Keras {keras.__version__} on {keras.config.backend()}, ONNX Runtime {onnxruntime.__version__}\n")
    if set(args.parts) & set("123"):
        lite0, photos224 = throughput(args.images, args.rounds)
    if "2" in args.parts:
        agreement(lite0, photos224)
    if "3" in args.parts:
        first_embedding(lite0, photos224, args.runs)
    if "4" in args.parts:
        same_neighbours()
    if "5" in args.parts:
        index_end_to_end(args.files, args.runs)
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
