"""Run by test_two_nodes.py in its own process: a two-node local Ray cluster (both on 127.0.0.1).

Deploys a live-reloading API with one replica on each node, behind the fast ingress on the
head node, changes a model, and prints a JSON report of what it saw (the test asserts on it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node takes 127.0.0.1

import httpx
import ray
from ray import serve
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from cortex_ray.sdk import run_api
from cortex_ray.spec import parse_spec

HANDLER = """
import os
import ray

class Handler:
    def __init__(self, model_client):
        self.client = model_client

    def load_model(self, model_path):
        return open(os.path.join(model_path, "model.txt")).read()

    def handle_post(self, payload):
        model, version = self.client.get_model_and_version("m")
        return {"content": model, "version": version, "node": ray.get_runtime_context().get_node_id()}
"""


def start_serve(port: int) -> int:
    """Serve without its proxy, and cortex-ray's fast ingress on ``port`` (on the head node);
    another free port if that one was taken meanwhile (the port was free when the test chose
    it, but the cluster's own processes bind ports as they start)."""
    from cortex_ray.ingress.control import start_ingress, stop_ingress
    from tests.support.s3_server import free_port

    serve.start(proxy_location="Disabled", logging_config={"enable_access_log": False})
    for attempt in range(5):
        try:
            start_ingress("127.0.0.1", port)
            return port
        except Exception as exc:
            if attempt == 4:
                raise
            print(f"ingress on {port} failed ({exc}); trying another port", flush=True)
            stop_ingress()
            port = free_port()
    raise AssertionError("unreachable")


def main() -> None:
    port = int(sys.argv[1])
    report: dict[str, object] = {}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node_a": 1}})
    cluster.add_node(num_cpus=2, resources={"node_b": 1})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        port = start_serve(port)
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp)
            (project / "handler.py").write_text(textwrap.dedent(HANDLER))
            (project / "store/m/1").mkdir(parents=True)
            (project / "store/m/1/model.txt").write_text("v1")
            spec = parse_spec(
                [
                    {
                        "name": "two-nodes",
                        "kind": "RealtimeAPI",
                        "handler": {
                            "type": "python",
                            "path": "handler.py",
                            "multi_model_reloading": {
                                "dir": "store",
                                "poll_interval": 0.5,
                                "settle_time": 0.5,
                            },
                        },
                        "autoscaling": {"min_replicas": 2, "max_replicas": 2},
                    }
                ],
                base_dir=project,
            )
            run_api(
                spec.apis[0], ingress="fast", max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.5}
            )
            url = f"http://127.0.0.1:{port}/two-nodes"
            handle = serve.get_deployment_handle("two-nodes", "two-nodes")
            # ask every replica through a broadcast (not whichever HTTP reaches)
            infos = [i["replica"] for i in handle.broadcast("info").results()]
            report["replica_nodes"] = sorted(i["node_id"] for i in infos)
            report["disk_caches"] = sorted(i["disk_cache"] for i in infos)
            report["cluster_nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
            with httpx.Client(timeout=30) as client:
                report["http_before"] = client.post(url, json={}).json()
                # the balancer on the head reaches the replica on the other node too
                report["http_nodes"] = sorted({client.post(url, json={}).json()["node"] for _ in range(20)})
            (project / "store/m/2").mkdir()
            (project / "store/m/2/model.txt").write_text("v2")
            changed = time.time()
            seen: dict[str, float] = {}
            while time.time() - changed < 60 and len(seen) < 2:
                for body in handle.broadcast("call", "post", {}).results():
                    if body["version"] == 2:
                        seen.setdefault(body["node"], round(time.time() - changed, 2))
                time.sleep(0.1)
            report["v2_seen_on_nodes_after_s"] = seen
            report["answers_after"] = handle.broadcast("call", "post", {}).results()
            with httpx.Client(timeout=30) as client:
                report["http_after"] = client.post(url, json={}).json()
    finally:
        try:
            from cortex_ray.ingress.control import stop_ingress

            stop_ingress()
            serve.shutdown()
            ray.shutdown()
        finally:
            cluster.shutdown()
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
