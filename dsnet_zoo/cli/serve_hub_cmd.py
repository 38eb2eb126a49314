"""``dsnet-zoo serve-hub DIR [--host 127.0.0.1] [--port N] [--quiet] [--fail-first N]``"""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve-hub", help="serve a folder of Hugging Face repos over the Hub's download API",
        description="Serve DIR/<org>/<name>/ repo folders (plain folders, or git repositories with "
                    "their branches, tags and commits) over the part of the Hugging Face Hub API "
                    "that hf_hub_download and snapshot_download use. Point HF_ENDPOINT at the "
                    "printed URL. No authentication: keep the default loopback host unless every "
                    "file under DIR may be read by anyone who can reach the port.")
    p.add_argument("dir", help="folder holding <org>/<name>/ repo folders")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port; 0 picks a free one (default 8765)")
    p.add_argument("--idle-timeout", type=float, default=30.0, metavar="S",
                   help="close a connection idle for S seconds (default 30)")
    p.add_argument("--quiet", action="store_true", help="do not log requests to stderr")
    p.add_argument("--fail-first", type=int, default=0, metavar="N",
                   help="testing aid: answer HTTP 500 to the first N requests")
    p.add_argument("--fail-match", default=None, metavar="REGEX",
                   help="with --fail-first: count only requests whose 'METHOD /path' matches")
    p.add_argument("--interrupt-first", type=int, default=0, metavar="N",
                   help="testing aid: drop the connection half-way through the first N file bodies")
    p.set_defaults(func=run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number: give 1-65535, or 0 for a free one") \
            from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: give 1-65535, or 0 for a free one")
    return port


def run(args) -> int:
    from ..hub.server import HubServer

    try:
        server = HubServer(args.dir, args.host, args.port, quiet=args.quiet,
                           fail_first=args.fail_first, fail_match=args.fail_match,
                           interrupt_first=args.interrupt_first, idle_timeout=args.idle_timeout)
    except FileNotFoundError:
        raise
    except OSError as e:  # address in use, no such interface
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; "
                         "pick another --port (0 picks a free one) or --host") from e
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        repos = server.repo_ids()
        print(f"dsnet-zoo serve-hub: serving {len(repos)} repos from {server.root}", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"dsnet-zoo serve-hub: warning: bound to {args.host} with no authentication; "
                  f"anyone who can reach it can read every file under {server.root}",
                  file=sys.stderr, flush=True)
        print(f"HF_ENDPOINT={server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
    print("dsnet-zoo serve-hub: stopped", flush=True)
    return 0
