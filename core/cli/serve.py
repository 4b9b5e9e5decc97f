"""``python -m core serve RUN``: one exported model over HTTP (``core.serving``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli import positive_int

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HELP = "serve a finished run's exported model over HTTP: POST /predict, GET /health, GET /metadata"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="a finished run (or its model/ folder)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; the service has no sign-in)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--max-batch", type=positive_int, default=16, help="images in one forward pass at most (default 16)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to share its forward pass (default 5)",
    )
    parser.add_argument(
        "--max-images", type=positive_int, default=32, help="images in one request at most (default 32)"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from core import limits
    from core.cli import CliError, say
    from core.cli.predict import model_dir_of
    from core.serving.app import ServeConfig, create_app

    if args.max_wait_ms < 0:
        raise CliError(f"--max-wait-ms must be 0 or more, not {args.max_wait_ms}")
    model_dir = model_dir_of(args.run_dir)
    config = ServeConfig(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_images=args.max_images,
        limits=limits.configured(),
    )
    app = create_app(model_dir, config)
    say(f"serving {model_dir} on http://{args.host}:{args.port} (Ctrl+C stops it)")
    if args.host not in LOOPBACK:
        say("the service has no sign-in: anyone who can reach this address can use the model")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
