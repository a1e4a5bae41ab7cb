"""One ``imgretrieval query`` against a bare ``python -c "import keras"``, and where its time goes.

Target (issue 13): one query of a Lite0 index within 1.25x the time of
importing Keras, measured in the same run. The two commands alternate, so
that a drift of the machine's speed touches both; medians are reported.
A third command imports only what any query of a safe index file needs
before it reads the file: skops.io (with scikit-learn) and Keras. The
second part times each stage of a query in one process, in the order the
command runs them: importing the library, the safe loader and Keras,
loading the index file and rebuilding the network, decoding and embedding
the query, searching.

    python benchmarks/bench_query.py            # 7 alternated runs of each
    python benchmarks/bench_query.py --runs 3   # quicker
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sklearn_imgretrieval.datasets import load_sample_photos, make_near_duplicates

STAGES = r"""
import sys, time
started = time.perf_counter()
def mark(stage):
    global started
    now = time.perf_counter()
    print(f"{stage}\t{now - started:.3f}")
    started = now
from sklearn_imgretrieval.cli.query import read_index, _batch_for
mark("import the command (no Keras)")
import skops.io
mark("import the safe loader (skops.io: scikit-learn and its estimators)")
import keras
mark("import keras (TensorFlow)")
index = read_index(sys.argv[1])
mark("load the index file, rebuild the network")
_batch_for(index.pipeline, 1)
rows = index.pipeline[:-1].transform([sys.argv[2]])
mark("decode and embed the query (first forward pass)")
index.pipeline[-1].kneighbors(rows, n_neighbors=5)
mark("search")
"""


def _run(command, env):
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="alternated runs of each command (default: 7)")
    args = parser.parse_args()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        photos, _ = load_sample_photos()
        images, _, _ = make_near_duplicates(photos)
        (folder / "photos").mkdir()
        for number, image in enumerate(images):
            image.convert("RGB").save(folder / "photos" / f"{number:03d}.jpg", quality=90)
        query = folder / "query.jpg"
        photos[3].convert("RGB").save(query, quality=80)
        index = folder / "photos.idx"
        subprocess.run(
            ["imgretrieval", "index", str(folder / "photos"), "-o", str(index)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"index: {len(images)} photos, imgretrieval index's defaults (EfficientNet-Lite0 at 224x224)")
        query_command = ["imgretrieval", "query", str(index), str(query), "-k", "5"]
        keras_command = [sys.executable, "-c", "import keras"]
        _run(query_command, env)  # warm the file cache of both
        _run(keras_command, env)
        # What every query of a safe index file must import before it reads anything: the safe
        # loader (skops.io, which imports scikit-learn and lists its estimators) and Keras.
        floor_command = [sys.executable, "-c", "import skops.io; import keras"]
        _run(floor_command, env)
        query_times, keras_times, floor_times = [], [], []
        for _ in range(args.runs):
            query_times.append(_run(query_command, env))
            keras_times.append(_run(keras_command, env))
            floor_times.append(_run(floor_command, env))
        ratios = [q / k for q, k in zip(query_times, keras_times)]
        floor_ratios = [f / k for f, k in zip(floor_times, keras_times)]
        print(f"\n{args.runs} runs of each, alternated; wall seconds min / median / max\n")
        print("| command | min | median | max |\n|---|---|---|---|")
        for name, times in (
            ("imgretrieval query (1 image)", query_times),
            ('python -c "import keras"', keras_times),
            ('python -c "import skops.io; import keras"', floor_times),
        ):
            print(f"| {name} | {min(times):.2f} | {statistics.median(times):.2f} | {max(times):.2f} |")
        print(f"\nratio query / import keras, run by run: median {statistics.median(ratios):.2f}x (target 1.25x)")
        print(f"ratio of the two imports alone / import keras: median {statistics.median(floor_ratios):.2f}x")

        print("\nWhere one query's time goes (one process, wall seconds, median of 3):\n")
        runs = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-c", STAGES, str(index), str(query)],
                check=True,
                env=env,
                capture_output=True,
                text=True,
            ).stdout
            runs.append([line.split("\t") for line in out.strip().splitlines()])
        print("| stage | seconds |\n|---|---|")
        for position, (stage, _) in enumerate(runs[0]):
            print(f"| {stage} | {statistics.median(float(run[position][1]) for run in runs):.2f} |")


if __name__ == "__main__":
    main()
