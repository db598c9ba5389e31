"""A Cortex 0.35-shaped project folder, as a user would bring one over (for the migration test).

- ``cortex.yaml`` at the root, the handler in ``src/`` importing ``helpers.py`` from the root;
- ``values.json`` opened with a relative path; ``.env`` with a variable read at import time;
- ``requirements.txt`` naming a wheel in the project (built here: no index needed);
- ``dependencies.sh`` writing a file the handler reads, and counting its runs;
- ``.cortexignore`` keeping ``ignored/`` out; ``models/`` is a local model folder inside it;
- the handler uses Cortex's logger, ``cortex.client()`` (to list APIs, and to deploy and delete
  another API of the project, ``tiny.py``), forms, repeated query keys, mixed-case headers, a
  callback, and a slow method for ``max_replica_concurrency``.
"""

from __future__ import annotations

import base64
import hashlib
import textwrap
import zipfile
from pathlib import Path

__all__ = ["TINY_SPEC", "make_project", "wheel"]

HANDLER = """
import json
import os
import threading
import time

import helpers  # a module at the project root
import tinypkg  # installed from requirements.txt
from cortex_internal.lib.log import logger
import cortex

OMP_AT_IMPORT = os.environ.get("OMP_NUM_THREADS")


class Handler:
    def __init__(self, config, model_client):
        with open("values.json") as f:  # relative to the project folder
            self.values = json.load(f)
        with open("generated.txt") as f:  # made by dependencies.sh
            self.generated = f.read().strip()
        self.client = model_client
        self.callbacks = []
        self.config = config
        logger.debug("debug logging is on", extra={"where": "init"})
        logger.info("handler ready", extra={"values": len(self.values)})

    def load_model(self, model_path):
        with open(os.path.join(model_path, "w.txt")) as f:
            return f.read().strip()

    def handle_get(self, query_params, headers):
        runs = open(os.environ["DEPS_MARKER"]).read().count("ran") if os.environ.get("DEPS_MARKER") else None
        return {
            "cwd_has_spec": os.path.exists("cortex.yaml"),
            "omp_at_import": OMP_AT_IMPORT,
            "greeting": os.environ.get("GREETING"),
            "from_spec": os.environ.get("FROM_SPEC"),
            "helper": helpers.double(21),
            "tinypkg": tinypkg.VALUE,
            "values": self.values,
            "generated": self.generated,
            "ignored_shipped": os.path.exists("ignored"),
            "tags": query_params.getlist("tag"),
            "custom_header": headers.get("X-Custom-Header"),
            "content_type": headers["Content-Type"] if "content-type" in headers else None,
            "client": type(cortex.client()).__name__,
            "apis": [a["name"] for a in cortex.client().list_apis()],
            "callbacks": list(self.callbacks),
            "model": self.client.get_model("m"),
            "config": self.config,
            "dependency_runs": runs,
        }

    def handle_post(self, payload, headers):
        if hasattr(payload, "multi_items"):  # a form: Starlette's FormData
            fields = {}
            for key, value in payload.multi_items():
                fields[key] = value.filename if hasattr(value, "filename") else value
            return {"form": fields}
        mark = payload.get("mark")

        def callback():
            time.sleep(0.1)
            self.callbacks.append(mark)

        return {"echo": payload}, callback

    def handle_put(self, payload):
        time.sleep(float(payload.get("sleep", 0)))
        return {"slept": payload.get("sleep", 0)}

    def handle_patch(self, payload):  # Cortex's client deploys and deletes APIs from a handler
        client = cortex.client()
        if "deploy" in payload:
            return {"deployed": client.deploy(payload["deploy"], wait=True)["api"]}
        client.delete(payload["delete"])
        return {"deleted": payload["delete"]}
"""

TINY = """
class Handler:
    def __init__(self, config):
        self.word = config["word"]

    def handle_get(self):
        return {"tiny": self.word}
"""

TINY_SPEC = {
    "name": "tiny",
    "kind": "RealtimeAPI",
    "handler": {
        "type": "python",
        "path": "tiny.py",
        "config": {"word": "deployed from a handler"},
        # none of the project's requirements or dependencies.sh: they are the other API's
        "dependencies": {"pip": "tiny-requirements.txt", "shell": "tiny-dependencies.sh"},
    },
}
"""An API a handler deploys with ``cortex.client().deploy(TINY_SPEC)`` (``tiny.py`` in the project)."""

SPEC = """\
- name: project
  kind: RealtimeAPI
  handler:
    type: python
    path: src/handler.py
    log_level: debug
    threads_per_process: 2
    config: {{answer: 42}}
    env: {{FROM_SPEC: "spec"}}
    multi_model_reloading:
      dir: models
  autoscaling:
    max_replica_concurrency: 2
    target_replica_concurrency: 2
    {extra_autoscaling}
"""


def wheel(folder: Path, name: str = "tinypkg", version: str = "0.1", value: str = "from the wheel") -> Path:
    """A minimal pure-Python wheel (one module), built without pip or an index."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for rel, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)
    return path


def make_project(root: Path, marker: Path, extra_autoscaling: str = "") -> Path:
    """Write the project into ``root``; ``marker`` counts the runs of ``dependencies.sh``.
    Returns the spec file."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "handler.py").write_text(textwrap.dedent(HANDLER))
    (root / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "tiny.py").write_text(textwrap.dedent(TINY))
    (root / "tiny-requirements.txt").write_text("# nothing to install\n")
    (root / "tiny-dependencies.sh").write_text("# nothing to set up\n")
    (root / "values.json").write_text('{"a": 1, "b": [2, 3]}')
    (root / ".env").write_text(
        f"# read before Python starts\nOMP_NUM_THREADS=3\nGREETING='hello there'\nDEPS_MARKER={marker}\n"
    )
    wheel(root / "wheels")
    (root / "requirements.txt").write_text(
        "# the project's own wheel\n./wheels/tinypkg-0.1-py3-none-any.whl\n"
    )
    (root / "dependencies.sh").write_text(
        'echo "made by dependencies.sh" > generated.txt\necho ran >> "$DEPS_MARKER"\n'
    )
    (root / ".cortexignore").write_text("# not for the cluster\nignored/\n")
    (root / "ignored").mkdir(exist_ok=True)
    (root / "ignored" / "notes.txt").write_text("left out")
    (root / "models" / "m" / "1").mkdir(parents=True, exist_ok=True)
    (root / "models" / "m" / "1" / "w.txt").write_text("weights-v1")
    spec = root / "cortex.yaml"
    spec.write_text(SPEC.format(extra_autoscaling=extra_autoscaling))
    return spec
