"""``imgretrieval query``: the nearest indexed images of query images."""

import json
import sys
from pathlib import Path

from ._common import UsageError

MODEL_FORMAT = "sklearn-imgretrieval-index"


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "query",
        help="find the nearest indexed images of query images",
        description="Print each query image's nearest indexed images with their distances.",
        epilog="example:\n  imgretrieval query photos.joblib cat.jpg -k 5 --plot answers.png",
        formatter_class=formatter,
    )
    parser.add_argument("model", help="model file written by `imgretrieval index`")
    parser.add_argument("images", nargs="+", help="query image files")
    parser.add_argument("-k", type=int, default=5, help="neighbours per query (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", metavar="PNG", help="also save a picture of the answers")
    parser.set_defaults(run=run)


def _load_model(path):
    import joblib

    if not Path(path).is_file():
        raise UsageError(f"no model file at {path}")
    try:
        model = joblib.load(path)
    except Exception as exc:  # any unpickling failure means: not one of ours
        raise UsageError(f"{path} is not a model saved by `imgretrieval index` ({type(exc).__name__})") from exc
    if not isinstance(model, dict) or model.get("format") != MODEL_FORMAT:
        raise UsageError(f"{path} is not a model saved by `imgretrieval index`")
    return model


def run(args):
    model = _load_model(args.model)
    missing = [image for image in args.images if not Path(image).is_file()]
    if missing:
        raise UsageError(f"no such image file: {', '.join(missing)}")
    gallery = model["paths"]
    k = min(args.k, len(gallery))
    distances, indices = model["pipeline"].kneighbors(args.images, n_neighbors=k)
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
            print(f"query: {result['query']}")
            for rank, neighbour in enumerate(result["neighbors"], start=1):
                print(f"  {rank:>3}  {neighbour['distance']:10.4f}  {neighbour['path']}")
    if args.plot:
        from ..plotting import plot_retrieval

        fig = plot_retrieval(args.images, gallery, indices, distances)
        fig.savefig(args.plot, dpi=100, bbox_inches="tight")
        print(f"wrote {args.plot}", file=sys.stderr)
