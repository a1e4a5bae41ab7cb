"""One ``imgretrieval query`` against a bare ``python -c "import keras"``, where its time goes, its peak memory.

Target (issue 26): one query of one photo against a Lite0 index within 0.35x
the time of importing Keras, measured in the same run. The commands
alternate, so that a drift of the machine's speed touches all of them;
medians are reported. A floor command imports only what a query needs at
least (NumPy, FAISS, Pillow, ONNX Runtime, scikit-learn's neighbours). With
``--before CHECKOUT`` the same query runs on the library of another checkout
(its own index, built by that checkout), for the before/after columns.
The second part times each stage of a query in one process, in the order
the command runs them, and says whether Keras, TensorFlow or skops were
imported.

    python benchmarks/bench_query.py                           # 7 alternated runs of each
    python benchmarks/bench_query.py --runs 3 --before /tmp/old-main
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
from sklearn_imgretrieval.cli.query import read_index
from sklearn_imgretrieval.pipeline import set_query_batch_size
mark("import the command")
index = read_index(sys.argv[1])
mark("read the index file (the safe format, no skops)")
set_query_batch_size(index.pipeline, 1)
rows = index.pipeline[:-1].transform([sys.argv[2]])
mark("decode and embed the query (the runtime's first run)")
index.pipeline[-1].kneighbors(rows, n_neighbors=5)
mark("search")
for name in ("keras", "tensorflow", "skops"):
    print(f"{name} imported\t{name in sys.modules}")
"""


def _run(command, env):
    """Wall seconds and peak resident memory (MiB) of one run, from GNU time."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], check=True, env=env, stdout=subprocess.DEVNULL, capture_output=False,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return time.perf_counter() - started, int(done.stderr.strip().splitlines()[-1]) / 1024


def _photos(folder):
    photos, _ = load_sample_photos()
    images, _, _ = make_near_duplicates(photos)
    (folder / "photos").mkdir()
    for number, image in enumerate(images):
        image.convert("RGB").save(folder / "photos" / f"{number:03d}.jpg", quality=90)
    query = folder / "query.jpg"
    photos[3].convert("RGB").save(query, quality=80)
    return len(images), query


def _index(folder, env, name):
    index = folder / name
    subprocess.run(
        [sys.executable, "-m", "sklearn_imgretrieval", "index", str(folder / "photos"), "-o", str(index)],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return index


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="alternated runs of each command (default: 7)")
    parser.add_argument("--before", metavar="CHECKOUT", help="also time the query of another checkout's library")
    args = parser.parse_args()
    print(f"$ python benchmarks/bench_query.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"load average at start: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        n_photos, query = _photos(folder)
        index = _index(folder, env, "photos.idx")
        print(f"index: {n_photos} photos, imgretrieval index's defaults (EfficientNet-Lite0 at 224x224)")
        commands = {
            "imgretrieval query (1 image)": ([sys.executable, "-m", "sklearn_imgretrieval", "query", str(index),
                                              str(query), "-k", "5"], env),
            'python -c "import keras"': ([sys.executable, "-c", "import keras"], env),
            "floor: import numpy, faiss, PIL.Image, onnxruntime, sklearn.neighbors": (
                [sys.executable, "-c", "import numpy, faiss, PIL.Image, onnxruntime, sklearn.neighbors"], env),
        }  # fmt: skip
        if args.before:
            before_env = {**env, "PYTHONPATH": str(Path(args.before).resolve())}
            before_index = _index(folder, before_env, "before.idx")
            commands[f"imgretrieval query (1 image), {args.before}"] = (
                [sys.executable, "-m", "sklearn_imgretrieval", "query", str(before_index), str(query), "-k", "5"],
                before_env,
            )
        for command, command_env in commands.values():
            _run(command, command_env)  # warm the file cache
        times = {name: [] for name in commands}
        peaks = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (command, command_env) in commands.items():
                seconds, peak = _run(command, command_env)
                times[name].append(seconds)
                peaks[name].append(peak)
        keras_times = times['python -c "import keras"']
        print(f"\n{args.runs} runs of each, alternated; wall seconds min / median / max, peak memory median\n")
        print("| command | min | median | max | peak MiB | median ratio to import keras |\n|---|---|---|---|---|---|")
        for name in commands:
            ratio = statistics.median(t / k for t, k in zip(times[name], keras_times))
            print(
                f"| {name} | {min(times[name]):.2f} | {statistics.median(times[name]):.2f} | {max(times[name]):.2f} "
                f"| {statistics.median(peaks[name]):,.0f} | {ratio:.2f}x |"
            )
        print("\ntarget: imgretrieval query at most 0.35x import keras")

        print("\nWhere one query's time goes (one process, wall seconds, median of 3):\n")
        runs = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-c", STAGES, str(index), str(query)], check=True, env=env, capture_output=True,
                text=True,
            ).stdout  # fmt: skip
            runs.append([line.split("\t") for line in out.strip().splitlines()])
        print("| stage | seconds |\n|---|---|")
        for position, (stage, value) in enumerate(runs[0]):
            if stage.endswith("imported"):
                print(f"| {stage} | {value} |")
            else:
                print(f"| {stage} | {statistics.median(float(run[position][1]) for run in runs):.2f} |")
    print(f"\nload average at end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
