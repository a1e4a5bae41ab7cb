"""The one bound on batch sizes: the memory one batch of rows may take.

A Keras embedder pads every batch to ``batch_size`` rows, so that an image's
embedding does not depend on how many images share its batch: a batch costs
``batch_size`` rows whatever the number of images, and ``batch_size=10**6``
made one query image cost a million rows. The bound is checked when the rows'
length is known (at ``fit`` and ``transform``, and before ``find_duplicates``
reads an image), before any batch is made.
"""

import numbers

#: Bytes of float32 one batch may hold as the network's input. A batch exists
#: about three times at once (the rows taken, their padded copy, the backend's
#: tensor): 3 GiB at the limit before the network's own activations, which for
#: a CNN are several times more. Lite0 at 224x224 may batch 1,783 images.
MAX_BATCH_BYTES = 2**30


def check_batch_size(batch_size, values_per_row, *, name="batch_size"):
    """Refuse a ``batch_size`` whose batches of ``values_per_row`` float32 values pass ``MAX_BATCH_BYTES``.

    Parameters
    ----------
    batch_size : int
        Rows per batch.
    values_per_row : int
        float32 values of one row as the network takes it (for a network that
        resizes its input, the resized image's).
    name : str, default="batch_size"
        What the error calls the setting.
    """
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{name} must be a positive integer, got {batch_size!r}.")
    row_bytes = 4 * values_per_row
    if batch_size * row_bytes <= MAX_BATCH_BYTES:
        return
    limit = f"{MAX_BATCH_BYTES / 2**30:g} GiB"
    largest = MAX_BATCH_BYTES // row_bytes
    if largest < 1:
        advice = "Even one row is more: make the images smaller (ImagePreprocessor(size=...))."
    else:
        advice = f"Use {name} <= {largest:,} (the default is 32)."
    raise ValueError(
        f"{name}={batch_size:,} makes batches of {batch_size:,} rows of {values_per_row:,} float32 values, "
        f"{batch_size * row_bytes / 2**30:,.1f} GiB, more than the {limit} a batch may take (every batch is "
        f"padded to {name} rows, and held about three times over before the network's own memory). {advice}"
    )
