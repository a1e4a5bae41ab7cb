"""The ``imgretrieval`` command: one module per subcommand.

Only argparse and the package's light modules are imported at start-up;
Keras (and so TensorFlow) is imported when a command needs an embedder, so
``imgretrieval --help`` answers at once. Each subcommand module has
``add_parser(commands, formatter)`` and ``run(args)``; the commands call
library functions and orchestrate nothing of their own.
"""

import argparse
import os
import sys

from .._version import __version__
from . import dedupe, demo, evaluate, index, query, serve
from ._common import UsageError
from ._outputs import CommandOutputs

__all__ = ["build_parser", "main"]

_COMMANDS = (demo, index, query, evaluate, dedupe, serve)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="imgretrieval",
        description="Content-based image retrieval with scikit-learn estimators.",
        epilog="Try first: imgretrieval demo",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(commands, argparse.RawDescriptionHelpFormatter)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status.

    Errors end with their whole message (a decoding error lists every
    failing file) and status 2; Ctrl-C with one line saying what was
    written, and status 130. Neither shows a traceback.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines are noise here
    args = build_parser().parse_args(argv)
    args.outputs = CommandOutputs()  # what this run writes
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(args.outputs.interrupted_line(), file=sys.stderr)
        return 130
    except (UsageError, ValueError, OSError, ImportError) as exc:
        print(f"imgretrieval: error: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 2
    return 0
