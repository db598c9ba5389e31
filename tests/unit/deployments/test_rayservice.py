"""``deployments/rayservice.yaml`` (KubeRay): valid for the RayService CRD that KubeRay ships
(vendored in deployments/kuberay/), its ``serveConfigV2`` exactly what ``cortex-ray build-config``
writes for the examples, and its cluster running the Dockerfile's image and the pinned Ray.

The CRD's schema is an OpenAPI v3 structural schema. Kubernetes prunes fields it does not know
instead of refusing them, so a misspelt field would vanish silently: this check refuses them
(``additionalProperties: false`` wherever the schema lists ``properties`` and does not say
``x-kubernetes-preserve-unknown-fields``). ``x-kubernetes-int-or-string`` allows an integer or a
string, ``nullable`` allows null, ``x-kubernetes-list-type: set`` needs unique items, and
``x-kubernetes-list-map-keys`` unique keys (a missing key taking its default). The CEL rules
(``x-kubernetes-validations``) are not evaluated: the test checks the file sets none of the fields
they are on. Any other ``x-kubernetes-*`` key stops the conversion, so a new one is not ignored.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import ValidationError

from cortex_ray.cli.main import main as cortex_ray_main
from cortex_ray.spec import NEURON_CORES_PER_CHIP

CRD_SCHEMA = Path("deployments/kuberay/ray.io_rayservices.v1.openapi.json")
RAYSERVICE = Path("deployments/rayservice.yaml")
REGENERATE = "cortex-ray build-config deployments/cortex.yaml --host 0.0.0.0"
"""The command whose output serveConfigV2 is, run from the repo root (/app in the image)."""

Path_ = tuple[str, ...]  # a place in the schema / document: property names, "[]" for list items


# -- the CRD's OpenAPI v3 schema as a JSON schema -------------------------------------------------

KNOWN_EXTENSIONS = {
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",  # how a map merges on apply: nothing to validate
    "x-kubernetes-validations",  # CEL: not evaluated (see cel_rule_places)
}


SUBSCHEMAS = ("properties", "items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    unknown = {k for k in node if k.startswith("x-kubernetes-")} - KNOWN_EXTENSIONS
    assert not unknown, f"the CRD uses {unknown}: teach to_json_schema what they mean"
    out = {k: v for k, v in node.items() if k not in SUBSCHEMAS}
    if "properties" in node:
        out["properties"] = {name: to_json_schema(sub) for name, sub in node["properties"].items()}
    if node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            out["properties"].setdefault(name, {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    elif "additionalProperties" in node:
        out["additionalProperties"] = node["additionalProperties"]
    elif "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False  # Kubernetes would prune it: a typo, here
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [to_json_schema(sub) for sub in node[key]]
    if "not" in node:
        out["not"] = to_json_schema(node["not"])
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _unique_list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    defaults = {k: v.get("default") for k, v in schema.get("items", {}).get("properties", {}).items()}
    seen: dict[tuple[Any, ...], int] = {}
    for index, item in enumerate(instance):
        if isinstance(item, dict):
            key = tuple(json.dumps(item.get(k, defaults.get(k)), sort_keys=True) for k in keys)
            if key in seen:
                yield ValidationError(f"items {seen[key]} and {index} have the same {', '.join(keys)}")
            seen.setdefault(key, index)


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _unique_list_map_keys}
)


def cel_rule_places(node: dict[str, Any], at: Path_ = ()) -> Iterator[Path_]:
    if "x-kubernetes-validations" in node:
        yield at
    for name, sub in node.get("properties", {}).items():
        yield from cel_rule_places(sub, (*at, name))
    if isinstance(node.get("additionalProperties"), dict):
        yield from cel_rule_places(node["additionalProperties"], (*at, "*"))
    if "items" in node:
        yield from cel_rule_places(node["items"], (*at, "[]"))


def values_at(document: Any, at: Path_) -> Iterator[Any]:
    if not at:
        yield document
    elif at[0] == "[]" and isinstance(document, list):
        for item in document:
            yield from values_at(item, at[1:])
    elif at[0] == "*" and isinstance(document, dict):
        for value in document.values():
            yield from values_at(value, at[1:])
    elif isinstance(document, dict) and at[0] in document:
        yield from values_at(document[at[0]], at[1:])


@pytest.fixture(scope="module")
def crd_schema(repo: Path) -> dict[str, Any]:
    return json.loads((repo / CRD_SCHEMA).read_text())


@pytest.fixture(scope="module")
def validator(crd_schema: dict[str, Any]) -> Any:
    schema = to_json_schema(crd_schema)
    CRDValidator.check_schema(schema)
    return CRDValidator(schema)


@pytest.fixture(scope="module")
def rayservice(repo: Path) -> dict[str, Any]:
    return yaml.safe_load((repo / RAYSERVICE).read_text())


def crd_errors(validator: Any, document: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


def containers(rayservice: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# -- the file against the CRD ---------------------------------------------------------------------


def test_rayservice_is_valid_for_kuberays_crd(rayservice: dict[str, Any], validator: Any) -> None:
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    errors = crd_errors(validator, rayservice)
    assert not errors, f"{RAYSERVICE} is not valid for the CRD ({CRD_SCHEMA}):\n" + "\n".join(errors)


def _head(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        (lambda d: d["spec"]["rayClusterConfig"].update(workerGroupSpec=[]), False),  # misspelt
        (lambda d: _head(d).update(imagePullPolcy="Always"), False),  # misspelt, deep in the pod
        (lambda d: d["spec"].update(serveConfigV2={"applications": []}), False),  # a string, not a map
        (lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"), False),
        (lambda d: _head(d)["resources"]["limits"].update(cpu=2), True),  # int-or-string: an int
        (lambda d: _head(d)["resources"]["limits"].update(cpu="2 cores"), False),  # not a quantity
        (lambda d: _head(d)["resources"]["limits"].update(cpu=[2]), False),
        (lambda d: _head(d)["ports"].append({"containerPort": 8000, "name": "again"}), False),  # list-map key
        (lambda d: _head(d)["ports"].append({"containerPort": 8000, "protocol": "UDP"}), True),
        (lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].update(port=6379), False),
    ],
    ids=[
        "misspelt field",
        "misspelt container field",
        "serveConfigV2 not a string",
        "worker group without groupName",
        "quantity as an integer",
        "quantity that is no quantity",
        "quantity as a list",
        "duplicate port",
        "same port, other protocol",
        "rayStartParams value not a string",
    ],
)
def test_the_crd_check_refuses_what_kubernetes_would_refuse_or_prune(
    rayservice: dict[str, Any], validator: Any, change: Any, valid: bool
) -> None:
    document = copy.deepcopy(rayservice)
    change(document)
    assert (not crd_errors(validator, document)) is valid


def test_rayservice_sets_no_field_of_an_unchecked_cel_rule(
    rayservice: dict[str, Any], crd_schema: dict[str, Any]
) -> None:
    places = list(cel_rule_places(crd_schema))
    assert places, "the CRD has no CEL rules any more: drop this test"
    used = [".".join(at) for at in places if list(values_at(rayservice, at))]
    assert not used, f"{RAYSERVICE} sets fields whose CEL rules this check does not evaluate: {used}"


# -- serveConfigV2 is build-config's output -------------------------------------------------------


def build_config_output(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``REGENERATE``, in this process, from the repo root."""
    monkeypatch.chdir(repo)
    out = tmp_path / "serve_config.yaml"
    argv = shlex.split(REGENERATE)
    assert argv[0] == "cortex-ray"
    assert cortex_ray_main([*argv[1:], "-o", str(out)]) == 0
    return yaml.safe_load(out.read_text())


def test_serve_config_v2_is_what_build_config_writes(
    rayservice: dict[str, Any], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = build_config_output(repo, tmp_path, monkeypatch)
    assert yaml.safe_load(rayservice["spec"]["serveConfigV2"]) == expected, (
        f"{RAYSERVICE}: serveConfigV2 is not what `{REGENERATE}` writes (run from the repo root): "
        f"run it and put its output under serveConfigV2"
    )


def test_rayservice_names_the_command_its_serve_config_comes_from(repo: Path) -> None:
    assert f"#   {REGENERATE}\n" in (repo / RAYSERVICE).read_text()


def test_build_config_does_not_start_ray(repo: Path) -> None:
    """So the check above needs no Ray: in a fresh process the command neither starts Ray nor
    joins one (today it does not even import it)."""
    code = (
        "import os, shlex, sys\n"
        "from cortex_ray.cli.main import main\n"
        f"assert main([*shlex.split({REGENERATE!r})[1:], '-o', os.devnull]) == 0\n"
        "ray = sys.modules.get('ray')\n"
        "assert ray is None or not ray.is_initialized(), 'build-config started or joined Ray'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_serve_config_v2_is_a_config_serve_deploys(rayservice: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))


# -- the Ray cluster ------------------------------------------------------------------------------


def dockerfile_image_and_workdir(repo: Path) -> tuple[str, str]:
    """The image name of the Dockerfile's documented build command, and its last WORKDIR."""
    text = (repo / "deployments" / "Dockerfile").read_text()
    builds = re.findall(r"docker build -f deployments/Dockerfile -t (\S+) \.", text)
    assert len(builds) == 1, "deployments/Dockerfile must document its one build command"
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", text, re.MULTILINE)
    assert workdirs, "deployments/Dockerfile sets no WORKDIR"
    return builds[0], workdirs[-1]


def test_ray_cluster_runs_the_dockerfiles_image_with_the_pinned_ray(
    rayservice: dict[str, Any], repo: Path, ray_pin: str, pyproject: dict[str, Any]
) -> None:
    image, workdir = dockerfile_image_and_workdir(repo)
    assert image == f"cortex-ray:{pyproject['project']['version']}", "tag the image with the package version"
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray_pin, f"rayVersion is not the pinned Ray {ray_pin} (pyproject.toml)"
    assert cluster["workerGroupSpecs"], "no worker group"
    for container in containers(rayservice):
        assert container["image"] == image, f"{container['name']} runs {container['image']}, not {image}"
        # the spec path in serveConfigV2 is relative to where Ray starts: the image's /app
        assert container.get("workingDir", workdir) == workdir, container["name"]


def test_the_serve_config_finds_its_spec_in_the_image(rayservice: dict[str, Any], repo: Path) -> None:
    """The image holds the repo's deployments/ at WORKDIR/deployments, where Ray starts: each
    application's relative spec path resolves there as it does from the repo root."""
    _, workdir = dockerfile_image_and_workdir(repo)
    dockerfile = (repo / "deployments" / "Dockerfile").read_text()
    assert re.search(r"^COPY\b.*\bdeployments/ deployments/$", dockerfile, re.MULTILINE)
    for app in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]:
        spec = app["args"]["spec"]
        assert not os.path.isabs(spec), f"{spec}: relative to the repo root here and {workdir} in the image"
        assert (repo / spec).is_file(), spec


def test_the_head_serves_the_fast_ingress_on_kuberays_serve_port(rayservice: dict[str, Any]) -> None:
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    head = _head(rayservice)
    ports = {p.get("name"): p["containerPort"] for p in head.get("ports", [])}
    for app in config["applications"]:
        assert app["args"]["ingress"] == "fast" and app["args"]["host"] == "0.0.0.0", app["name"]
        assert ports.get("serve") == app["args"]["port"], "KubeRay's serve port is where HAProxy listens"


def test_inferentia_workers_hold_a_chip_of_compute_inf(rayservice: dict[str, Any]) -> None:
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    neuron = [
        c["resources"]["limits"]["aws.amazon.com/neuroncore"]
        for g in groups
        for c in g["template"]["spec"]["containers"]
        if "aws.amazon.com/neuroncore" in c.get("resources", {}).get("limits", {})
    ]
    assert neuron, "no worker group with aws.amazon.com/neuroncore (Ray's neuron_cores)"
    assert all(int(n) >= NEURON_CORES_PER_CHIP for n in neuron), neuron
