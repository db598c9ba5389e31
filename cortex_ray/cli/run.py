"""``cortex-ray run SPEC [--host H] [--port P]``: serve every API on a local Ray."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from cortex_ray.errors import SpecErrors

__all__ = ["add_parser", "run_serve"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("run", help="serve every API of a spec on a local Ray until Ctrl-C")
    p.add_argument("spec", help="path to the spec file (cortex.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    add_ingress_option(p)
    p.set_defaults(func=lambda a: run_serve(a.spec, a.host, a.port, a.ingress))


def add_ingress_option(p: argparse.ArgumentParser) -> None:
    from cortex_ray.ingress.control import DEFAULT_INGRESS, INGRESS_MODES

    p.add_argument(
        "--ingress",
        choices=INGRESS_MODES,
        default=DEFAULT_INGRESS,
        help="fast: replicas serve HTTP behind cortex-ray's balancer (default); proxy: Ray Serve's proxy",
    )


def run_serve(spec_path: str, host: str, port: int, ingress: str = "fast") -> int:
    from cortex_ray import sdk
    from cortex_ray.cli.report import load_checked, print_errors

    try:
        load_checked(spec_path)
    except SpecErrors as exc:
        return print_errors(exc)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"\nreceived {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
        stop.set()

    def install() -> None:
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    install()
    try:
        try:
            handles = sdk.deploy(spec_path, host=host, port=port, ingress=ingress)
        except SpecErrors as exc:
            return print_errors(exc)
        except Exception as exc:
            print(f"error: deploying failed: {exc}", file=sys.stderr)
            return 1
        install()  # ray.init installs handlers of its own: take SIGINT/SIGTERM back
        for name, handle in handles.items():
            print(f"{name}: {handle.url}", flush=True)
        print("serving; press Ctrl-C to stop", flush=True)
        while not stop.is_set():  # short waits: signal handlers run between them
            stop.wait(0.5)
        return 0
    finally:
        sdk.shutdown()
        print("stopped", file=sys.stderr, flush=True)
