"""Decoding speed: 640x480 JPEG photos to 224x224 RGB rows.

Makes 2,000 JPEG photos of 640x480 from scikit-image's bundled colour
photos (random crops, flips and colour shifts, seeded), then times
``ImagePreprocessor(size=(224, 224), color_mode="rgb", n_jobs=2)`` against a
plain single-threaded Pillow loop (open, convert to RGB, resize, scale).

Run (about 2 minutes on 2 cores)::

    python benchmarks/bench_decode.py
    python benchmarks/bench_decode.py --n-images 200   # a quick run
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import load_photos, random_resized_crop
from PIL import Image

from sklearn_imgretrieval import ImagePreprocessor


def make_photos(folder, n_images, seed=0):
    """``n_images`` 640x480 JPEGs cut from the bundled photos."""
    rng = np.random.default_rng(seed)
    sources = load_photos()
    paths = []
    for i in range(n_images):
        # a random crop of 50-100 % of the side, stretched to 640x480
        photo = random_resized_crop(sources[i % len(sources)], (0.5, 1.0), (640, 480), rng)
        if rng.random() < 0.5:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.asarray(photo, dtype=np.float32) * rng.uniform(0.8, 1.2, 3)
        path = Path(folder) / f"photo_{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def plain_pillow(paths):
    out = np.empty((len(paths), 224 * 224 * 3), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("RGB").resize((224, 224)), dtype=np.float32).ravel() / 255
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats, alternated; best kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = make_photos(folder, args.n_images)
        preprocessor = ImagePreprocessor(size=(224, 224), color_mode="rgb", n_jobs=2)
        ours_s = plain_s = np.inf
        for _ in range(args.repeats):
            started = time.perf_counter()
            ours = preprocessor.fit_transform(paths)
            ours_s = min(ours_s, time.perf_counter() - started)
            started = time.perf_counter()
            plain = plain_pillow(paths)
            plain_s = min(plain_s, time.perf_counter() - started)
    command = "python benchmarks/bench_decode.py" + (f" --n-images {args.n_images}" if args.n_images != 2000 else "")
    print(f"$ {command}\n")
    print(f"{args.n_images} JPEG photos 640x480 -> 224x224 RGB float32 rows (best of {args.repeats})\n")
    print("| decoder | seconds | images/s |")
    print("|---|---|---|")
    print(f"| plain Pillow loop, 1 thread | {plain_s:.2f} | {args.n_images / plain_s:.0f} |")
    print(f"| ImagePreprocessor(n_jobs=2) | {ours_s:.2f} | {args.n_images / ours_s:.0f} |")
    print(f"\nspeed-up: {plain_s / ours_s:.2f}x")
    print(
        f"max |difference| of the pixels: {np.abs(ours - plain).max():.3f}, mean {np.abs(ours - plain).mean():.4f} "
        "(JPEG draft mode decodes at 1/2 scale before resizing)"
    )


if __name__ == "__main__":
    main()
