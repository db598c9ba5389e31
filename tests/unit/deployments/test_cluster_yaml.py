"""``cluster.yaml`` (the Ray cluster launcher on AWS): the launcher's own schema and checks, and
what the schema cannot say: the node types it needs, their accelerators, the pinned Ray."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cortex_ray.spec import NEURON_CORES_PER_CHIP

IMAGE = re.compile(r"rayproject/ray:(?P<tag>\S+)")
RAY_REQUIREMENT = re.compile(r"\bray(\[[^\]]*\])?==(?P<version>[^\s\"',;]+)")


@pytest.fixture(scope="module")
def cluster(repo: Path) -> dict[str, Any]:
    return yaml.safe_load((repo / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def launcher_schema() -> dict[str, Any]:
    """``ray-schema.json`` from the installed Ray (found without importing it)."""
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations, "ray is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def schema_errors(schema: dict[str, Any], config: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    ]


def instance_type(node_type: dict[str, Any]) -> str:
    return str(node_type["node_config"]["InstanceType"])


def node_types_of(cluster: dict[str, Any], *families: str) -> dict[str, dict[str, Any]]:
    """The node types whose EC2 instance family starts with one of ``families`` (g, p, inf2...)."""
    return {
        name: t
        for name, t in cluster["available_node_types"].items()
        if re.match(rf"({'|'.join(families)})\d*[a-z]*\.", instance_type(t))
    }


def test_cluster_yaml_matches_the_launchers_schema(
    cluster: dict[str, Any], launcher_schema: dict[str, Any]
) -> None:
    errors = schema_errors(launcher_schema, cluster)
    assert not errors, "cluster.yaml does not match Ray's ray-schema.json:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(max_worker=10),  # a misspelt top-level field
        lambda c: c["available_node_types"]["head"].update(resource={}),  # ... and a node type's
        lambda c: c["available_node_types"]["gpu-workers"]["resources"].update(GPU=0.5),  # not an int
        lambda c: c.update(setup_commands="pip install ."),  # not a list
    ],
    ids=["top-level typo", "node type typo", "fractional resource", "commands not a list"],
)
def test_the_schema_check_catches_mistakes(
    cluster: dict[str, Any], launcher_schema: dict[str, Any], change: Any
) -> None:
    broken = copy.deepcopy(cluster)
    change(broken)
    assert schema_errors(launcher_schema, broken)


def test_cluster_yaml_passes_what_ray_up_checks_before_it_calls_aws(cluster: dict[str, Any]) -> None:
    """The launcher's own preparation and validation (defaults merged in, the head node type, the
    workers' bounds), which ``ray up`` runs before it talks to the cloud."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_head_node_type_is_one_of_the_node_types(cluster: dict[str, Any]) -> None:
    assert cluster["provider"]["type"] == "aws"
    assert cluster["head_node_type"] in cluster["available_node_types"], (
        f"head_node_type {cluster['head_node_type']!r} is not in available_node_types"
    )
    for name, node_type in cluster["available_node_types"].items():
        if name != cluster["head_node_type"]:
            assert node_type.get("min_workers", 0) <= node_type["max_workers"], name


def test_there_are_cpu_gpu_and_inf2_node_types(cluster: dict[str, Any]) -> None:
    cpu = node_types_of(cluster, "m", "c", "r")
    assert len(cpu) >= 2, "a CPU head and CPU workers (m5, c5, r5...)"
    assert node_types_of(cluster, "g", "p"), "no GPU node type (g5, p4d...)"
    assert node_types_of(cluster, "inf2"), "no inf2 node type"
    for name, node_type in cpu.items():
        assert not {"GPU", "neuron_cores"} & set(node_type["resources"]), f"{name} is a CPU instance"


def test_gpu_node_types_declare_their_gpus(cluster: dict[str, Any]) -> None:
    for name, node_type in node_types_of(cluster, "g", "p").items():
        gpus = node_type["resources"].get("GPU")
        assert isinstance(gpus, int) and gpus >= 1, f"{name} ({instance_type(node_type)}) must declare GPU"
        image = node_type.get("docker", {}).get("worker_image", cluster.get("docker", {}).get("image", ""))
        assert re.search(r"-(gpu|cu\d+)$", image), f"{name} needs a CUDA image, not {image!r}"


def test_inf2_node_types_declare_the_neuron_cores_ray_counts(cluster: dict[str, Any]) -> None:
    """``neuron_cores`` is Ray's name of the resource (what compute.inf asks for); the count is the
    one Ray's AWS provider would fill in, and holds at least one chip of ``compute.inf``."""
    from ray._private.accelerators.neuron import NeuronAcceleratorManager

    assert NeuronAcceleratorManager.get_resource_name() == "neuron_cores"
    for name, node_type in node_types_of(cluster, "inf2").items():
        declared = node_type["resources"].get("neuron_cores")
        counted = NeuronAcceleratorManager.get_ec2_instance_num_accelerators(instance_type(node_type), {})
        assert declared == counted, f"{name}: neuron_cores is {declared}, Ray counts {counted}"
        assert declared >= NEURON_CORES_PER_CHIP, (
            f"{name}: {declared} NeuronCores cannot hold a replica with compute.inf: 1 "
            f"({NEURON_CORES_PER_CHIP} neuron_cores)"
        )
        assert "GPU" not in node_type["resources"], name


def test_every_ray_named_is_the_pinned_one(
    cluster: dict[str, Any], ray_pin: str, python_tags: set[str]
) -> None:
    text = yaml.safe_dump(cluster)  # every image and command, the node types' too
    tags: list[str] = [m["tag"] for m in IMAGE.finditer(text)]
    assert tags, "cluster.yaml names no rayproject/ray image"
    for tag in tags:
        version, _, variant = tag.partition("-")
        python = variant.split("-")[0]
        assert version == ray_pin, f"rayproject/ray:{tag} is not the pinned Ray {ray_pin} (pyproject.toml)"
        assert python in python_tags, f"rayproject/ray:{tag}: Python tag not allowed by requires-python"
    for match in RAY_REQUIREMENT.finditer(text):
        assert match["version"] == ray_pin, f"{match[0]} is not the pinned Ray {ray_pin}"


def test_setup_commands_install_this_repos_cortex_ray(cluster: dict[str, Any]) -> None:
    mounts = [remote for remote, local in cluster["file_mounts"].items() if local in (".", "./")]
    assert mounts, "file_mounts must send the repo (.) to the nodes"
    where = {mounts[0], mounts[0].replace("~", "$HOME", 1)}
    installs = [
        c
        for c in cluster["setup_commands"]
        if re.search(r"\bpip install\b", c)
        and any(re.search(rf"{re.escape(w)}(\[|\s|\"|$)", c) for w in where)
    ]
    assert installs, f"no setup command pip-installs the repo mounted at {mounts[0]}"
    assert ".gitignore" in cluster.get("rsync_filter", []), "the mount would send .venv and the models"
