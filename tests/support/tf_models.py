"""Real TensorFlow SavedModels, built on the spot for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "save_classifier",
    "save_cortex_iris",
    "save_half_plus_two",
    "save_half_plus_two_examples",
    "save_multi_signature",
    "save_tagged",
    "save_text_model",
]


def _tf() -> Any:
    import tensorflow as tf

    return tf


def save_classifier(path: Path, scale: float = 1.0) -> Path:
    """``x: float32[None, 4]`` -> ``scores: float32[None, 3]``, ``label: int64[None]``."""
    tf = _tf()

    class Classifier(tf.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            weights = tf.reshape(tf.range(12, dtype=tf.float32), (4, 3)) * scale
            self.w = tf.Variable(weights)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            scores = tf.matmul(x, self.w)
            return {"scores": scores, "label": tf.argmax(scores, axis=1)}

    module = Classifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def save_cortex_iris(path: Path) -> Path:
    """Cortex's iris example: four ``float32[None]`` inputs, fed scalars by its handler."""
    tf = _tf()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

    class Iris(tf.Module):  # type: ignore[misc, name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in names])
        def predict(self, sepal_length: Any, sepal_width: Any, petal_length: Any, petal_width: Any) -> Any:
            total = sepal_length + sepal_width + petal_length + petal_width
            return {"class_ids": tf.cast(total > 10.0, tf.int64), "total": total}

    module = Iris()
    tf.saved_model.save(module, str(path), signatures={"predict": module.predict})
    return path


def save_multi_signature(path: Path, with_predict: bool = False) -> Path:
    """Two signatures (``double``, ``triple``), plus ``predict`` when asked."""
    tf = _tf()

    class Multi(tf.Module):  # type: ignore[misc, name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="v")])
        def double(self, v: Any) -> Any:
            return {"out": v * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="v")])
        def triple(self, v: Any) -> Any:
            return {"out": v * 3}

    module = Multi()
    signatures = {"double": module.double, "triple": module.triple}
    if with_predict:
        signatures["predict"] = module.double
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def save_text_model(path: Path) -> Path:
    """``text: string[None]`` -> ``length: int32[None]``, ``upper: string[None]``."""
    tf = _tf()

    class Text(tf.Module):  # type: ignore[misc, name-defined]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> Any:
            return {"length": tf.strings.length(text), "upper": tf.strings.upper(text)}

    module = Text()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def save_half_plus_two(path: Path) -> Path:
    """TF Serving's test model: ``x: float32[None]`` -> ``y = 0.5 x + 2`` (``serving_default``,
    also under ``predict``)."""
    tf = _tf()

    class HalfPlusTwo(tf.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": self.a * x + self.b}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def save_tagged(path: Path, tag: str, weights: int = 0) -> Path:
    """``x: float32[None]`` -> ``tag: string[None]`` (``tag`` for every row: which model this is)
    and ``total: float32[None]`` (x plus the sum of ``weights`` float32 weights, which the model
    holds in memory: ``weights * 4`` bytes)."""
    tf = _tf()

    class Tagged(tf.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.fill([max(weights, 1)], 0.5 if weights else 0.0))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"tag": tf.fill(tf.shape(x), tag), "total": x + tf.reduce_sum(self.w)}

    module = Tagged()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def save_half_plus_two_examples(path: Path) -> Path:
    """TF Serving's ``half_plus_two`` as its classify and regress tests use it: a TF1 graph that
    parses serialized ``tf.Example`` protos (features ``x``, and ``x2`` defaulting to 0) and holds
    its weights in variables (``a``, ``b``, ``c``), with
    signatures of each method: ``predict`` (``inputs`` -> ``y``), ``classify_x_to_y`` and
    ``classify_x2_to_y3`` (scores ``0.5 x + 2``, ``0.5 x2 + 3``), ``regress_x_to_y``."""
    tf = _tf()
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = {
            "x": v1.io.FixedLenFeature([1], tf.float32),
            "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
        }
        parsed = v1.io.parse_example(serialized, features)
        a, b, c = (v1.Variable(value, name=n) for value, n in ((0.5, "a"), (2.0, "b"), (3.0, "c")))
        y = tf.add(tf.multiply(parsed["x"], a), b, name="y")
        y3 = tf.add(tf.multiply(parsed["x2"], a), c, name="y3")
        builder = v1.saved_model.Builder(str(path))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    "predict": v1.saved_model.predict_signature_def({"inputs": serialized}, {"y": y}),
                    "classify_x_to_y": v1.saved_model.classification_signature_def(serialized, None, y),
                    "classify_x2_to_y3": v1.saved_model.classification_signature_def(serialized, None, y3),
                    "regress_x_to_y": v1.saved_model.regression_signature_def(serialized, y),
                },
            )
            builder.save()
    return path
