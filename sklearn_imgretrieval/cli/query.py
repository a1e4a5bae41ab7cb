"""``imgretrieval query``: the nearest indexed images of query images."""

import json
import sys
from pathlib import Path

from ..persistence import pickle_kind, pickle_refusal
from ._common import UsageError, cluster_arguments, positive_int, shown_path


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "query",
        help="find the nearest indexed images of query images",
        description="Print each query image's nearest indexed images with their distances. "
        "Index files written by earlier versions are pickles, which can run code when loaded: "
        "they are refused unless you pass --trust-pickle, and --convert-to rewrites them once "
        "in the safe format.",
        epilog="example:\n  imgretrieval query photos.idx cat.jpg -k 5 --plot answers.png\n\n"
        "an index from an earlier version (a pickle: only one you made or trust), rewritten once:\n"
        "  imgretrieval query old.joblib --trust-pickle --convert-to photos.idx",
        formatter_class=formatter,
    )
    parser.add_argument("index", help="index file written by `imgretrieval index`")
    parser.add_argument("images", nargs="*", help="query image files")
    parser.add_argument("-k", type=positive_int, default=5, help="neighbours per query (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", metavar="PNG", help="also save a picture of the answers")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load an index file that is a pickle (from an earlier version). Loading a pickle "
        "runs any code its author put in it: only for files you made or trust",
    )
    parser.add_argument("--convert-to", metavar="FILE", help="write the index in the safe format to FILE")
    parser.add_argument(
        "--root",
        metavar="FOLDER",
        help="where the indexed folder is now, when it has moved since indexing: answers (and --plot) "
        "name the files there",
    )
    cluster_arguments(parser, "querying")
    parser.set_defaults(run=run)


def read_index(path, *, trust_pickle=False, root=None, client=None):
    """Load an index file: the safe format, or a pickle only with ``trust_pickle``."""
    from ..indexing import load_index

    kind = pickle_kind(path)
    if kind is not None and not trust_pickle:
        raise UsageError(pickle_refusal(path, kind))
    return load_index(path, root=root, trust_pickle=trust_pickle, client=client)


def run(args):
    if not args.images and not args.convert_to:
        raise UsageError("give at least one query image (or only --convert-to FILE to convert the index)")
    # Every output is checked before the index is loaded or an image decoded.
    args.outputs.check(
        [("--convert-to", args.convert_to), ("--plot", args.plot)],
        reads=[args.index, *args.images],
        figures=[args.plot],
    )
    if not Path(args.index).is_file():
        raise UsageError(f"no index file at {args.index}")
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise UsageError(f"no such image file: {', '.join(missing)}")
    from ..indexing import dask_client

    with dask_client(args.scheduler, args.workers) as client:
        _query(args, read_index(args.index, trust_pickle=args.trust_pickle, root=args.root, client=client))


def _query(args, index):
    from ..pipeline import set_query_batch_size

    if args.convert_to:
        args.outputs.save_index(index, args.convert_to)
        print(f"wrote {args.convert_to}: the index in the safe format", file=sys.stderr)
    elif args.trust_pickle and pickle_kind(args.index):
        print(
            f"imgretrieval: note: add --convert-to photos.idx to stop needing --trust-pickle for {args.index}",
            file=sys.stderr,
        )
    if not args.images:
        return
    gallery = index.paths
    k = min(args.k, len(gallery))
    set_query_batch_size(index.pipeline, len(args.images))
    distances, indices = index.kneighbors(args.images, n_neighbors=k)
    results = [
        {
            "query": query,
            "neighbors": [{"path": gallery[i], "distance": float(d)} for i, d in zip(indices[row], distances[row])],
        }
        for row, query in enumerate(args.images)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(f"query: {shown_path(result['query'])}")
            for rank, neighbour in enumerate(result["neighbors"], start=1):
                print(f"  {rank:>3}  {neighbour['distance']:10.4f}  {shown_path(neighbour['path'])}")
    if args.plot:
        from ..plotting import plot_retrieval

        args.outputs.save_figure(plot_retrieval(args.images, gallery, indices, distances), args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
