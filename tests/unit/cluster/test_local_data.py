"""What cannot work across the nodes of a cluster is refused at deploy time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cortex_ray.cluster.connect import check_local_data
from cortex_ray.errors import SpecErrors
from cortex_ray.spec import load_spec


def test_local_models_and_stores_need_a_shared_folder_on_several_nodes(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("class Handler:\n    def handle_async(self, payload): ...\n")
    apis = [
        {
            "name": "rt",
            "kind": "RealtimeAPI",
            "handler": {"type": "python", "path": "handler.py", "multi_model_reloading": {"dir": "models"}},
        },
        {"name": "as", "kind": "AsyncAPI", "handler": {"type": "python", "path": "handler.py"}},
    ]
    (tmp_path / "cortex.yaml").write_text(yaml.safe_dump(apis))
    spec = load_spec(tmp_path / "cortex.yaml")
    check_local_data(spec, nodes=1)  # one node: everything is local to it
    with pytest.raises(SpecErrors) as info:
        check_local_data(spec, nodes=3)
    text = str(info.value)
    assert "api 'rt' (#0): handler.multi_model_reloading.dir" in text and "3 nodes" in text
    assert "api 'as' (#1): workloads.store" in text and "--shared-dir" in text
    check_local_data(spec, nodes=3, shared_dirs=[str(tmp_path)])  # the operator says it is shared
