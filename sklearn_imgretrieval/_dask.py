"""Dask (dask.distributed): embedding files on a cluster, and dask arrays through transform.

This is the one module that talks to Dask, imported only when a client or a
dask array is given. Workers are separate processes started with spawn, so
Keras never runs in a forked process.
"""

import contextlib

import numpy as np


def import_distributed():
    try:
        import dask.distributed
    except ImportError as exc:
        raise ImportError(
            'Embedding on a Dask cluster needs dask.distributed: pip install "sklearn-imgretrieval[dask]" '
            '(or pip install "dask[distributed]").'
        ) from exc
    return dask.distributed


@contextlib.contextmanager
def dask_client(address=None, n_workers=None, *, timeout=10):
    """A Dask client: to the scheduler at ``address``, or to a local cluster of ``n_workers``.

    A local cluster runs one single-threaded worker process per worker
    (started with spawn) and is closed on exit; a remote scheduler is left
    running. A scheduler that does not answer within ``timeout`` seconds is
    a clear error naming its address.

    Parameters
    ----------
    address : str, default=None
        The scheduler, such as ``"tcp://10.0.0.5:8786"``.
    n_workers : int, default=None
        Workers of a local cluster, when no address is given.
    timeout : float, default=10
        Seconds to wait for the scheduler.

    Yields
    ------
    client : dask.distributed.Client
    """
    distributed = import_distributed()
    if address is not None:
        try:
            client = distributed.Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"Could not reach the Dask scheduler at {address} within {timeout} s ({exc}). Check the "
                "address and that `dask scheduler` runs there."
            ) from None
        with client:
            yield client
        return
    import dask

    # Dask's nannies give their workers MALLOC_TRIM_THRESHOLD_=65536, under
    # which TensorFlow's forward pass ran 1.5x slower here (Lite0 at 224,
    # 4.0 s against 2.7 s for 64 images): the workers keep glibc's default.
    environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
    environ = {name: value for name, value in environ.items() if name != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def embed_on_cluster(client, embed, steps, paths, chunk_size):
    """``(start, embed(steps, chunk))`` per chunk, computed on the cluster, yielded in file order.

    ``embed`` is a module-level function (``indexing.embed_files``), sent to
    the workers by reference.

    The fitted ``steps`` go to every worker once (``scatter(broadcast=True)``);
    each task then carries only its file names. A few chunks per worker are
    in flight at a time, so that memory stays flat however many files there
    are. A task whose worker dies is run again on another worker (Dask's
    own retry); when it keeps failing the run stops with an error naming the
    chunk, and nothing is half-written.
    """
    distributed = import_distributed()
    # A key of its own for each run: equal steps scattered again would reuse their
    # hashed key, and Dask has raced on reused scatter keys while the old future
    # was being released (dask/distributed#8576: tasks "cancelled for reason:
    # already forgotten").
    remote_steps = client.scatter(steps, broadcast=True, hash=False)
    starts = list(range(0, len(paths), chunk_size))
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    in_flight = 2 * n_workers

    def submit(start):
        chunk = list(paths[start : start + chunk_size])
        return client.submit(embed, remote_steps, chunk, pure=False)

    futures = {submit(start): start for start in starts[:in_flight]}
    queued = iter(starts[in_flight:])
    finished = {}
    next_start = 0
    waiting = distributed.as_completed(list(futures), loop=client.loop)
    try:
        for future in waiting:
            start = futures.pop(future)
            try:
                finished[start] = future.result()
            except distributed.KilledWorker as exc:
                raise RuntimeError(
                    f"Dask workers kept dying while embedding the chunk that starts at {paths[start]} "
                    f"({exc}); nothing was written. Check the workers' memory and logs."
                ) from None
            following = next(queued, None)
            if following is not None:
                new = submit(following)
                futures[new] = following
                waiting.add(new)
            while next_start in finished:
                yield next_start, finished.pop(next_start)
                next_start += chunk_size
    finally:
        for future in futures:
            future.cancel()


def is_dask_array(X):
    return type(X).__module__.startswith("dask.array")


def transform_blocks(transform, X, n_features_out):
    """``transform`` mapped over the row blocks of the dask array ``X``: a lazy dask array.

    Every block holds all the columns (the array is rechunked if not), so
    each call sees whole images.
    """
    X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    return X.map_blocks(
        transform,
        dtype=np.float32,
        chunks=(X.chunks[0], (n_features_out,)),
        drop_axis=list(range(2, X.ndim)),
    )
