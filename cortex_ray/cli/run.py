"""``cortex-ray run SPEC [--host H] [--port P]``: serve every API on a local Ray."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from cortex_ray.cli.options import add_grpc_port_option, add_ingress_option, add_requirements_option
from cortex_ray.errors import SpecErrors
from cortex_ray.project.runtime_env import INSTALL

__all__ = ["GRACEFUL_S", "TERM_GRACE_S", "add_parser", "run_serve"]

GRACEFUL_S = 5.0
"""How long Serve's and Ray's own shutdown may take once serving (then what is left is killed)."""
TERM_GRACE_S = 1.5
"""How long Ray's processes get between SIGTERM and SIGKILL. With :data:`GRACEFUL_S` and the
2 s a kill may take, a stop ends within 10 s of the signal."""

STOPPING = (
    "Ctrl-C or SIGTERM, at any moment (during the deploy too), stops everything it started, the local"
    " Ray included, within 10 s; a second Ctrl-C forces it at once. Exit status: 0 when stopped after"
    " serving; 1 when the spec or the deploy failed; 130 (SIGINT) or 143 (SIGTERM) when interrupted"
    " before serving or forced by a second signal."
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "run",
        help="serve every API of a spec on a local Ray until Ctrl-C",
        description=f"Serve every API of a spec on a local Ray until Ctrl-C. {STOPPING}",
    )
    p.add_argument("spec", help="path to the spec file (cortex.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    add_ingress_option(p)
    add_requirements_option(p)
    add_grpc_port_option(p)
    p.set_defaults(func=lambda a: run_serve(a.spec, a.host, a.port, a.ingress, a.requirements, a.grpc_port))


class _RayThread(threading.Thread):
    """Every Ray call of the run (deploy, then shutdown when told), on one thread that lives until
    the run ends: Ray's node processes are told to die with the thread that started them
    (``PR_SET_PDEATHSIG``), and the main thread stays free to handle signals."""

    def __init__(
        self, spec_path: str, host: str, port: int, ingress: str, requirements: str, grpc_port: int | None
    ) -> None:
        super().__init__(name="cortex-ray-run", daemon=True)
        self.args = (spec_path, host, port, ingress, requirements, grpc_port)
        self.deployed = threading.Event()  # the deploy returned or raised
        self.release = threading.Event()  # the main thread: shut down now
        self.finished = threading.Event()  # the shutdown returned
        self.handles: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        from cortex_ray import sdk

        spec_path, host, port, ingress, requirements, grpc_port = self.args
        try:
            self.handles = sdk.deploy(
                spec_path,
                host=host,
                port=port,
                ingress=ingress,
                requirements=requirements,
                grpc_port=grpc_port,
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self.deployed.set()
        self.release.wait()
        try:
            sdk.shutdown()
        except Exception as exc:  # what is left is stopped anyway
            logging.getLogger("cortex_ray").warning("shutdown: %s", exc)
        finally:
            self.finished.set()


class _NotMainThread(logging.Filter):
    """Drops Ray's warning that ``ray.init`` off the main thread sets no SIGTERM handler: the
    command has its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def run_serve(
    spec_path: str,
    host: str,
    port: int,
    ingress: str = "fast",
    requirements: str = INSTALL,
    grpc_port: int | None = None,
) -> int:
    from cortex_ray import sdk
    from cortex_ray.cli.report import load_checked, print_errors
    from cortex_ray.cli.stopping import Signals, exit_now, process_tree, say, stop_processes

    try:
        spec = load_checked(spec_path, requirements)
    except SpecErrors as exc:
        return print_errors(exc)
    known = process_tree()
    owned = [False]  # whether this run started the local Ray (sdk.shutdown forgets it)

    def force(signum: int) -> None:  # in the signal handler: nothing waits for Ray any more
        if owned[0] or sdk.started_local_ray():
            stop_processes(known, grace=0)
        say("stopped")
        exit_now(128 + signum)

    signals = Signals(force)
    signals.install()
    logging.getLogger("ray._private.worker").addFilter(_NotMainThread())
    worker = _RayThread(spec_path, host, port, ingress, requirements, grpc_port)
    worker.start()
    taken_back = False
    while not worker.deployed.is_set() and not signals.received.is_set():
        if not taken_back and _ray_connected():
            signals.install()  # Ray's core worker installed a SIGTERM handler of its own: take it back
            taken_back = True
        signals.received.wait(0.05)  # short waits: the handlers run between them
    if not worker.deployed.is_set():  # interrupted during the deploy: the Ray thread may never return
        assert signals.signum is not None
        process_tree(known)
        if sdk.started_local_ray():
            stop_processes(known, grace=TERM_GRACE_S)
        else:  # a Ray this run joined: only what it deployed there, and briefly
            _shutdown_beside(worker)
        say("stopped")
        exit_now(128 + signals.signum)
    signals.install()  # (again: the deploy may have been quicker than the loop's look)
    code = 0
    if isinstance(worker.error, SpecErrors):
        code = print_errors(worker.error)
    elif worker.error is not None:
        print(f"error: deploying failed: {worker.error}", file=sys.stderr, flush=True)
        code = 1
    else:
        from cortex_ray.net import dial_host
        from cortex_ray.rpc import package_of

        grpc = sdk.session().grpc_port
        for name, handle in worker.handles.items():
            print(f"{name}: {handle.url}", flush=True)
        for api in spec.apis:
            if api.serves_grpc:
                print(
                    f"{api.name}: gRPC (package {package_of(api.name)}) at {dial_host(host)}:{grpc}",
                    flush=True,
                )
        print("serving; press Ctrl-C to stop", flush=True)
        while not signals.received.is_set():
            signals.received.wait(0.5)
    signals.begin_stop()
    owned[0] = sdk.started_local_ray()
    process_tree(known)
    worker.release.set()
    finished = worker.finished.wait(GRACEFUL_S)
    if owned[0]:
        stop_processes(known, grace=TERM_GRACE_S)  # what Ray's shutdown left, or all of it
    say("stopped")
    if not finished or owned[0]:  # Ray blocked, or its processes gone: nothing may wait on it at exit
        exit_now(code)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code


def _ray_connected() -> bool:
    import ray

    return bool(ray.is_initialized())


def _shutdown_beside(worker: _RayThread) -> None:
    """Best effort, beside the Ray thread still deploying: stop Serve on the Ray this run joined."""
    from cortex_ray import sdk

    stopper = threading.Thread(target=sdk.shutdown, name="cortex-ray-stop", daemon=True)
    stopper.start()
    stopper.join(GRACEFUL_S)
