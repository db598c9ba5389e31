"""``notebooks/quickstart.ipynb`` runs from top to bottom, as a user would run it (its own
kernel, its own local Ray, the example models built), and draws its live-reloading plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.s3_server import free_port

pytestmark = pytest.mark.ray


def test_the_quickstart_notebook_runs_and_draws_its_plot(
    examples_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    root = examples_dir.parent
    notebook = nbformat.read(root / "notebooks" / "quickstart.ipynb", as_version=4)
    monkeypatch.setenv("PORT", str(free_port()))  # the kernel inherits it
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    )
    with client.setup_kernel():
        try:
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)  # a failing cell raises CellExecutionError
        finally:  # whatever failed: the kernel's Ray is stopped before the kernel is
            assert client.kc is not None
            # (the client is nbclient's asynchronous one: the call is a coroutine, run to its end)
            stop = run_sync(client.kc.execute_interactive)
            reply = stop("import cortex_ray; cortex_ray.shutdown()", timeout=60)
            assert reply["content"]["status"] == "ok", reply["content"]
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 1, [o.output_type for o in outputs]
    texts = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "setosa" in texts and "tree=2" in texts
