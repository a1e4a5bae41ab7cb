"""Helpers shared by the benchmark scripts (run as ``python benchmarks/x.py``)."""

import time

import numpy as np

#: scikit-image's bundled colour photos (inside its wheel, so offline).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def load_photos():
    """The bundled colour photos as RGB PIL images."""
    from PIL import Image
    from skimage import data

    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]


def random_resized_crop(photo, side_range, size, rng):
    """A crop of ``side_range`` (fractions of each side) at a random place, resized to ``size`` (W, H)."""
    from PIL import Image

    side = rng.uniform(*side_range)
    w, h = int(photo.width * side), int(photo.height * side)
    left, top = rng.integers(0, photo.width - w + 1), rng.integers(0, photo.height - h + 1)
    return photo.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))


def best_time(function, repeats=3):
    """The shortest of ``repeats`` wall-clock timings of ``function()``, in seconds."""
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best
