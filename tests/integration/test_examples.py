"""The example APIs of deployments/ (what the README's main command serves), built and served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.ray


def test_the_example_apis_answer_as_the_readme_shows(
    examples_dir: Path, ray_serve: Any, http: httpx.Client
) -> None:
    from cortex_ray.sdk import delete, run_api
    from cortex_ray.spec import load_spec

    project = examples_dir
    spec = load_spec(project / "cortex.yaml")
    assert [a.name for a in spec.apis] == ["iris", "onnx-multi", "tf-multi"]
    try:
        for api in spec.apis:
            run_api(api, ray_actor_options={"num_cpus": 0.1})
        iris = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
        assert http.post("/iris", json=iris).json() == {"label": "setosa"}
        r = http.post("/onnx-multi", json={"model": "tree", "features": [[6.7, 3.0, 5.2, 2.3]]})
        assert r.json() == {"model": "tree", "version": 2, "labels": ["virginica"]}
        assert r.headers["x-cortex-model-version"] == "tree=2"
        r = http.post(
            "/onnx-multi", json={"model": "logreg", "version": "1", "features": [[5.9, 3.0, 5.1, 1.8]]}
        )
        assert r.status_code == 200 and r.json()["version"] == 1
        assert http.get("/onnx-multi").json() == {"models": {"logreg": [1, 2], "tree": [1, 2]}}
        r = http.post("/tf-multi", json={"model": "iris", "features": [6.7, 3.0, 5.2, 2.3]})
        assert r.status_code == 200, r.text
        assert r.json()["labels"][0] in ("setosa", "versicolor", "virginica")
        assert r.headers["x-cortex-model-version"] == "iris=2"
        r = http.post("/tf-multi", json={"model": "sentiment", "text": ["great movie", "awful film"]})
        assert r.status_code == 200 and len(r.json()["positive"]) == 2
    finally:
        for api in spec.apis:
            delete(api.name)
