"""Where a request names its model, as Serve's proxy path reads it (no Ray needed)."""

from __future__ import annotations

from cortex_ray.ingress.router import model_named

SCOPE = {
    "path": "/models/iris/predict",
    "query_string": b"model=iris%402&x=1",
    "headers": [(b"x-model", b"tree"), (b"content-type", b"application/json")],
}


def test_query_header_and_path() -> None:
    assert model_named(SCOPE, "query", "model", "/models") == "iris@2"
    assert model_named(SCOPE, "query", "other", "/models") is None
    assert model_named(SCOPE, "header", "X-Model", "/models") == "tree"
    assert model_named(SCOPE, "path", "0", "/models") == "iris"
    assert model_named(SCOPE, "path", "5", "/models") is None
    assert model_named(SCOPE, "json", "model", "/models") is None  # the body is not there yet


def test_the_protocols_routes_name_their_model() -> None:
    def scope(path: str) -> dict[str, object]:
        return {"path": path, "query_string": b"model=other"}

    assert model_named(scope("/api/v2/models/iris/infer"), "query", "model", "/api") == "iris"
    assert model_named(scope("/api/v2/models/iris/versions/2/ready"), "", "", "/api") == "iris"
    assert model_named(scope("/api/v1/models/iris:predict"), "", "", "/api") == "iris"
    assert model_named(scope("/v1/models/iris/versions/3:predict"), "", "", "/") == "iris"
    assert model_named(scope("/api/v2/health/ready"), "", "", "/api") is None
    assert model_named(scope("/api/v2/models/iris/infer"), "", "", "/other") is None
    assert model_named(scope("/api/infer"), "query", "model", "/api") == "other"
