"""``imgretrieval serve``: a search web page and JSON API over an index file."""

import errno
import ipaddress
import signal
import socket
import sys

from ._common import UsageError, cluster_arguments, positive_int

_MEBIBYTE = 2**20


def add_parser(commands, formatter):
    parser = commands.add_parser(
        "serve",
        help="serve a search web page and JSON API over an index",
        description="Load INDEX once and serve a web page (drop or pick an image, see its nearest "
        "indexed images) and a JSON API. Binds 127.0.0.1 (this machine only) unless --host says "
        "otherwise. The index file is only read. Ctrl-C stops the server.",
        epilog="example:\n  imgretrieval serve photos.idx\n"
        "  curl -F image=@cat.jpg 'http://127.0.0.1:8000/api/search?k=10'\n\n"
        'needs the serve extra: pip install "sklearn-imgretrieval[serve]"',
        formatter_class=formatter,
    )
    parser.add_argument("index", help="index file written by `imgretrieval index`")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 lets the "
        "whole network search the index and see its images)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument(
        "-k", "--k", type=positive_int, default=10, help="neighbours when a request gives none (default: 10)"
    )
    parser.add_argument(
        "--max-upload-mb", type=positive_int, default=20, help="largest upload accepted, in MiB (default: 20)"
    )
    cluster_arguments(parser, "serving")
    parser.set_defaults(run=run)


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host, port):
    """A socket bound to ``host:port``, not yet listening: a port in use is
    reported before the index is loaded, and no connection is accepted
    until the server is ready to answer it."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {port}.")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address of this machine ({exc.strerror}).") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once after a stop
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use (another server?); choose another with --port, "
                "or --port 0 for any free one."
            ) from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"no permission to listen on port {port}; ports below 1024 need privileges.") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}.") from None
    return sock


def run(args):
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise ImportError(
            f'serve needs the serve extra ({exc.name} is missing): pip install "sklearn-imgretrieval[serve]"'
        ) from None

    from ..indexing import dask_client, load_index

    loopback = _is_loopback(args.host)
    sock = _bind(args.host, args.port)
    try:
        with dask_client(args.scheduler, args.workers) as client:
            index = load_index(args.index, client=client)
            app = create_app(
                index,
                default_k=args.k,
                max_k=max(100, args.k),
                max_upload_bytes=args.max_upload_mb * _MEBIBYTE,
                # Bound to the loopback: only its names (the default), so no DNS rebinding.
                **({} if loopback else {"allowed_hosts": ["*"]}),
            )
            config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
            # Listen now: a client that connects before uvicorn's loop runs waits in the backlog, not refused.
            sock.listen(config.backlog)
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"serving {args.index} ({len(index)} images) at http://{shown}:{port}  (Ctrl-C to stop)", flush=True)
            if not loopback:
                print(
                    f"imgretrieval: warning: listening on {args.host}: anyone who can reach this machine can "
                    "search the index and see its images.",
                    file=sys.stderr,
                )
            server = _server(uvicorn, config)
            server.run(sockets=[sock])
            if server.interrupted:
                # uvicorn stops on SIGINT even when this process inherited it ignored (a background
                # job of a script), then raises it again under that disposition, where it vanishes:
                # report the interruption as Ctrl-C from a terminal is (130 and one line).
                raise KeyboardInterrupt
    finally:
        sock.close()


def _server(uvicorn, config):
    """A uvicorn server that records whether SIGINT stopped it."""

    class Server(uvicorn.Server):
        interrupted = False

        def handle_exit(self, sig, frame):
            self.interrupted = self.interrupted or sig == signal.SIGINT
            super().handle_exit(sig, frame)

    return Server(config)
