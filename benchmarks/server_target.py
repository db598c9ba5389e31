"""One replica's HTTP server on its own, without Ray or HAProxy: cortex-ray's, or uvicorn's.

Both serve the same handler through the same :class:`~cortex_ray.endpoint.Endpoint` on a uvloop
loop, so the difference measured is the server: cortex-ray's own (``httptools``, hardened:
limits, timeouts, flow control) against uvicorn's ``HttpToolsProtocol`` with its defaults (the
well-kept server it would be built on instead), bridged to the endpoint by a minimal ASGI app.

    python benchmarks/server_target.py own|uvicorn PORT PROJECT   # prints READY, serves until stdin closes
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def endpoint(project: Path) -> Any:
    from cortex_ray.replica.core import ApiCore
    from cortex_ray.replica.user_code import load_handler_class
    from cortex_ray.spec import parse_spec

    api = parse_spec(
        [{"name": "api", "kind": "RealtimeAPI", "handler": {"type": "python", "path": "handler.py"}}],
        base_dir=project,
    ).apis[0]
    core = ApiCore(api)
    core.use_handler(load_handler_class(str(project / "handler.py"))(None))
    return core.endpoint


def asgi(answer: Any) -> Any:
    """The endpoint as an ASGI app: the bridge uvicorn would need."""
    from cortex_ray.endpoint import Incoming

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"][len("/api") :]
        out = await answer(Incoming(scope["method"], path, scope["query_string"], scope["headers"], body))
        await send({"type": "http.response.start", "status": out.status, "headers": out.headers})
        await send({"type": "http.response.body", "body": out.body})

    return app


def main() -> None:
    kind, port, project = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    answer = endpoint(project)
    if kind == "own":
        import uvloop

        from cortex_ray.ingress.server import FastServer

        async def serve() -> None:
            server = FastServer(answer, "/api", 1024)
            await server.start("127.0.0.1", port)
            print("READY", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

        uvloop.run(serve())
    else:
        import uvicorn

        config = uvicorn.Config(
            asgi(answer), host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning"
        )
        server = uvicorn.Server(config)
        threading.Thread(
            target=lambda: (sys.stdin.read(), setattr(server, "should_exit", True)), daemon=True
        ).start()
        print("READY", flush=True)
        server.run()


if __name__ == "__main__":
    main()
