"""Big folders: images per second and peak memory of streaming a folder into an index.

Image files are generated once under benchmarks/out/ (Fashion-MNIST items
upscaled to 64x64, saved as JPEG and PNG). Each run indexes a folder with
the default pretrained embedder (EfficientNet-Lite0 at 224, cosine, exact
search) through ``build_index``, in a fresh process:

- locally, and on a Dask LocalCluster of 2 (and 1) worker processes;
- for 2,000, 20,000 and 50,000 files (``--n``).

Reported: images per second, the indexing process's peak memory (and each
Dask worker's), and the ratio of peaks between sizes (memory must follow
the chunk and the index, not the folder). A second table measures
``PretrainedCNNEmbedder.transform`` on photo rows held in memory: peak
memory per image beyond the input.

Run (about 40 minutes on 2 cores; `--quick` for a smoke run)::

    python benchmarks/bench_indexing.py
    python benchmarks/bench_indexing.py --n 2000 --quick
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, run_worker

OUT = Path(__file__).parent / "out" / "indexing"


def make_folder(n):
    """``n`` image files in 10 class folders (a third PNG, the rest JPEG), made once."""
    folder = OUT / f"files_{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    from PIL import Image

    from sklearn_imgretrieval.datasets import load_fashion_mnist

    images, labels = load_fashion_mnist("train")
    for i in range(n):
        label_folder = folder / f"class{labels[i % len(images)]}"
        label_folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(images[i % len(images)]).resize((64, 64), Image.Resampling.BILINEAR)
        image.save(label_folder / f"{i:06d}.{'png' if i % 3 == 0 else 'jpg'}", quality=90)
    done.touch()
    return folder


def worker(task):
    """One indexing run in this fresh process; prints a JSON line."""
    from sklearn_imgretrieval import ImagePreprocessor, NearestImageRetriever, PretrainedCNNEmbedder
    from sklearn_imgretrieval import make_retrieval_pipeline as pipeline_of
    from sklearn_imgretrieval.datasets import load_image_folder
    from sklearn_imgretrieval.indexing import build_index, dask_client

    if task["kind"] == "transform":
        from sklearn_imgretrieval.datasets import load_sample_photos

        photos, _ = load_sample_photos()
        rows = ImagePreprocessor(size=(224, 224), color_mode="rgb").fit_transform(photos * (task["n"] // 13 + 1))
        rows = np.ascontiguousarray(rows[: task["n"]])
        embedder = PretrainedCNNEmbedder().fit(rows[:2])
        started = time.perf_counter()
        embedder.transform(rows)
        seconds = time.perf_counter() - started
        print(
            json.dumps({"n": task["n"], "input_mb": rows.nbytes / 2**20, "peak_mb": peak_rss_mb(), "seconds": seconds})
        )
        return
    paths, labels, names = load_image_folder(task["folder"])
    pipe = pipeline_of(
        ImagePreprocessor(size=(224, 224), color_mode="rgb", n_jobs=-1),
        PretrainedCNNEmbedder(),
        NearestImageRetriever(metric="cosine"),
    )
    with dask_client(n_workers=task["workers"]) as client:
        if client is not None:  # start the workers' Keras before the clock, as a warm cluster would be
            client.run(lambda: __import__("keras") and None)
        started = time.perf_counter()
        index = build_index(paths, pipe, labels=labels, class_names=names, chunk_size=256, client=client)
        seconds = time.perf_counter() - started
        workers_mb = sorted(client.run(peak_rss_mb).values()) if client is not None else []
    print(
        json.dumps(
            {
                "n": len(index),
                "seconds": seconds,
                "images_per_s": len(index) / seconds,
                "peak_mb": peak_rss_mb(),
                "workers_peak_mb": workers_mb,
            }
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 20000, 50000], help="folder sizes")
    parser.add_argument("--quick", action="store_true", help="local and 2 workers only, no transform table")
    parser.add_argument(
        "--dask-on-smallest", action="store_true", help="run the Dask engines on the smallest folder only"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    print(f"$ python benchmarks/bench_indexing.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {os.getloadavg()[0]:.2f}\n")
    print("## Streaming a folder into an index: Lite0 at 224, cosine, chunks of 256 files\n")
    print("| files | engine | seconds | images/s | peak MB (indexing process) | peak MB (each worker) |")
    print("|---|---|---|---|---|---|")
    peaks, speeds = {}, {}
    engines = [("local", None), ("Dask, 2 workers", 2)] + ([] if args.quick else [("Dask, 1 worker", 1)])
    for n in args.n:
        folder = make_folder(n)
        for name, workers in engines:
            if workers is not None and n != args.n[0] and (workers == 1 or args.dask_on_smallest):
                continue  # the one-worker overhead is measured on the smallest folder
            result = run_worker(__file__, {"kind": "index", "folder": str(folder), "workers": workers})
            peaks[n, name], speeds[n, name] = result["peak_mb"], result["images_per_s"]
            workers_mb = ", ".join(f"{mb:.0f}" for mb in result["workers_peak_mb"]) or "-"
            print(
                f"| {n:,} | {name} | {result['seconds']:.0f} | {result['images_per_s']:.1f} "
                f"| {result['peak_mb']:.0f} | {workers_mb} |",
                flush=True,
            )
    print()
    smallest = args.n[0]
    for n in args.n[1:]:
        print(
            f"peak memory, local, {n:,} files / {smallest:,} files: {peaks[n, 'local'] / peaks[smallest, 'local']:.2f}"
        )
    if (smallest, "Dask, 1 worker") in speeds:
        ratio = speeds[smallest, "Dask, 1 worker"] / speeds[smallest, "local"]
        print(f"throughput, Dask with 1 worker / local, {smallest:,} files: {ratio:.2f}")
    if args.quick:
        return
    print("\n## PretrainedCNNEmbedder().transform of photo rows in memory (224x224x3 float32)\n")
    print("| images | input MB | peak MB | images/s |")
    print("|---|---|---|---|")
    results = {}
    for n in (256, 768):
        results[n] = run_worker(__file__, {"kind": "transform", "n": n})
        result = results[n]
        print(f"| {n} | {result['input_mb']:.0f} | {result['peak_mb']:.0f} | {n / result['seconds']:.1f} |", flush=True)
    per_image = (results[768]["peak_mb"] - results[256]["peak_mb"]) / 512
    row_mb = results[768]["input_mb"] / 768
    print(
        f"\npeak memory per extra image: {per_image:.2f} MB, of which the input row is {row_mb:.2f} MB: "
        f"{per_image - row_mb:.2f} MB per image inside transform"
    )


if __name__ == "__main__":
    main()
