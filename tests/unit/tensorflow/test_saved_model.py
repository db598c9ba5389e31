"""SavedModel loading, signature resolution, input conversion and errors (real TensorFlow, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_ray.errors import BadRequestError, ModelLoadError
from cortex_ray.models import discover_models
from cortex_ray.spec import MultiModelsSpec
from cortex_ray.tensorflow import SavedModel, resolve_signature_key
from tests.support import tf_models

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tf")
    return {
        "classifier": tf_models.save_classifier(root / "classifier"),
        "iris": tf_models.save_cortex_iris(root / "iris"),
        "multi": tf_models.save_multi_signature(root / "multi"),
        "multi_predict": tf_models.save_multi_signature(root / "multi_predict", with_predict=True),
        "text": tf_models.save_text_model(root / "text"),
    }


def test_signature_key_resolution_rules() -> None:
    assert resolve_signature_key("b", ["a", "b"]) == "b"
    assert resolve_signature_key(None, ["only"]) == "only"
    assert resolve_signature_key(None, ["a", "predict"]) == "predict"
    with pytest.raises(ModelLoadError, match="please specify one the following keys 'a, b'"):
        resolve_signature_key(None, ["b", "a"])
    with pytest.raises(
        ModelLoadError, match=r"signature_key .zz. was not found .* found the following keys: a, b"
    ):
        resolve_signature_key("zz", ["a", "b"])


def test_signature_resolution_on_real_models(models: dict[str, Path]) -> None:
    assert SavedModel(str(models["classifier"]), "c", 1, None).signature_key == "serving_default"
    assert SavedModel(str(models["multi_predict"]), "m", 1, None).signature_key == "predict"
    assert SavedModel(str(models["multi"]), "m", 1, "triple").predict({"v": [1.0]}) == {"out": [3.0]}
    with pytest.raises(ModelLoadError, match="signature_key was not configured"):
        SavedModel(str(models["multi"]), "m", 1, None)


def test_outputs_flat_like_cortex_or_with_shapes(models: dict[str, Path]) -> None:
    model = SavedModel(str(models["classifier"]), "c", 1, None)
    flat = model.predict({"x": [[1, 0, 0, 0], [0, 0, 0, 1]]})
    assert flat == {"scores": [0.0, 1.0, 2.0, 9.0, 10.0, 11.0], "label": [2, 2]}
    shaped = model.predict({"x": [[1, 0, 0, 0], [0, 0, 0, 1]]}, keep_shapes=True)
    assert shaped["scores"] == [[0.0, 1.0, 2.0], [9.0, 10.0, 11.0]]
    assert model.cortex_metadata == {
        "signature_key": "serving_default",
        "inputs": {"x": {"dtype": "float32", "shape": [None, 4]}},
    }


def test_a_value_one_dimension_short_is_a_batch_of_one(models: dict[str, Path]) -> None:
    iris = SavedModel(str(models["iris"]), "iris", 1, None)
    out = iris.predict({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
    assert out["class_ids"] == [1] and out["total"] == pytest.approx([10.2])
    classifier = SavedModel(str(models["classifier"]), "c", 1, None)
    assert classifier.predict({"x": [1, 0, 0, 0]})["label"] == [2]


def test_strings_in_and_out(models: dict[str, Path]) -> None:
    text = SavedModel(str(models["text"]), "t", 3, None)
    assert text.predict({"text": ["abc", "hello"]}) == {"length": [3, 5], "upper": ["ABC", "HELLO"]}


def test_input_errors_name_model_version_key_and_expectation(models: dict[str, Path]) -> None:
    model = SavedModel(str(models["classifier"]), "clf", 7, None)
    with pytest.raises(
        BadRequestError, match=r"missing key 'x' for model 'clf' of version 7 \(expected float32"
    ):
        model.predict({"y": [1, 2, 3, 4]})
    with pytest.raises(
        BadRequestError, match=r"key 'x' expected float32 of shape \[None, 4\], got a value of shape \[2, 3\]"
    ):
        model.predict({"x": [[1, 2, 3], [4, 5, 6]]})
    with pytest.raises(BadRequestError, match="key 'x' expected float32"):
        model.predict({"x": [["a", "b", "c", "d"]]})
    with pytest.raises(BadRequestError, match="must be a dict keyed by the signature's input names"):
        model.predict([1, 2, 3, 4])
    with pytest.raises(BadRequestError, match="unexpected input key"):
        model.predict({"x": [1, 2, 3, 4], "extra": 1})


def test_a_neuron_compiled_model_says_it_needs_the_neuron_runtime(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    target = tmp_path / "neuron"
    import shutil

    shutil.copytree(models["classifier"], target)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((target / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    for function in graph.library.function:
        for node in function.node_def:
            if node.op == "MatMul":
                node.op = "NeuronOp"
    (target / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match=r"compiled for AWS Inferentia \(Neuron\).*Neuron runtime"):
        SavedModel(str(target), "n", 1, None)


def test_tensorflow_and_inferentia_layouts(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    shutil.copytree(models["classifier"], tmp_path / "store" / "clf" / "1")
    (tmp_path / "store" / "neuron" / "1").mkdir(parents=True)
    shutil.copy(models["classifier"] / "saved_model.pb", tmp_path / "store" / "neuron" / "1")
    spec = MultiModelsSpec(dir=str(tmp_path / "store"))
    cpu = discover_models(spec, "tensorflow")
    assert cpu.models["clf"].latest == 1
    assert "missing variables/variables.index" in (cpu.models["neuron"].versions[1].error or "")
    inf = discover_models(spec, "neuron")
    assert inf.models["neuron"].latest == 1 and inf.models["clf"].latest == 1
