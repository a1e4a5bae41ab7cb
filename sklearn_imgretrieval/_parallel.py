"""How many threads ``n_jobs`` means on this machine."""

import os


def local_threads(n_jobs):
    """Threads on this machine for ``n_jobs``, as scikit-learn counts them.

    ``None`` is 1, ``-1`` every core of this machine, ``-2`` all but one.
    Unlike ``joblib.effective_n_jobs``, the active joblib backend is not
    consulted: under ``parallel_backend("dask")`` it would count the whole
    cluster's cores, and these threads run here.
    """
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs
