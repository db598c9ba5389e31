"""Build the example model folders (small models trained on the spot).

    python deployments/build_models.py [--out deployments/model-store]

* ``iris/model.pkl``: a scikit-learn logistic regression (API ``iris``, single ``path``).
* ``onnx/<model>/<version>/model.onnx``: two versioned ONNX classifiers
  (API ``onnx-multi``, a ``dir`` with ``cache_size`` and ``disk_cache_size``).
* ``tf/iris/{1,2}`` and ``tf/sentiment/1``: Keras models exported as SavedModels
  (API ``tf-multi``, the TensorFlow handler; skipped when TensorFlow is not installed).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(out: Path) -> list[Path]:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    x = x.astype("float32")
    written = []
    iris = out / "iris" / "model.pkl"
    iris.parent.mkdir(parents=True, exist_ok=True)
    iris.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(x, y)))
    written.append(iris)
    candidates = {
        "logreg": [LogisticRegression(C=0.01, max_iter=500), LogisticRegression(C=10.0, max_iter=500)],
        "tree": [DecisionTreeClassifier(max_depth=1), DecisionTreeClassifier(max_depth=4)],
    }
    for name, models in candidates.items():
        for version, model in enumerate(models, start=1):
            path = out / "onnx" / name / str(version) / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            onx = to_onnx(model.fit(x, y), x[:1], options={id(model): {"zipmap": False}}, target_opset=15)
            path.write_bytes(onx.SerializeToString())
            written.append(path)
    return written + build_tensorflow(out)


def build_tensorflow(out: Path) -> list[Path]:
    """Two versions of a Keras iris classifier and a tiny Keras text model, as SavedModels."""
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        print("TensorFlow is not installed: skipping the tf-multi example's models")
        return []
    from sklearn.datasets import load_iris

    keras.utils.set_random_seed(0)
    x, y = load_iris(return_X_y=True)
    written = []
    for version, epochs in ((1, 5), (2, 60)):
        features = keras.Input(shape=(4,), name="features")
        hidden = keras.layers.Dense(16, activation="relu")(features)
        model = keras.Model(features, keras.layers.Dense(3, activation="softmax")(hidden))
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x.astype("float32"), y, epochs=epochs, verbose=0)
        path = out / "tf" / "iris" / str(version)
        model.export(str(path), verbose=False)
        written.append(path)
    texts = ["great movie", "awful film", "loved it", "hated it", "wonderful story", "terrible acting"]
    labels = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    vectorize = keras.layers.TextVectorization(max_tokens=100, output_sequence_length=4)
    vectorize.adapt(texts)
    text = keras.Input(shape=(), dtype="string", name="text")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(100, 8)(vectorize(text)))
    sentiment = keras.Model(text, keras.layers.Dense(1, activation="sigmoid")(pooled))
    sentiment.compile("adam", "binary_crossentropy")
    sentiment.fit(tf.constant(texts), tf.constant(labels), epochs=30, verbose=0)
    path = out / "tf" / "sentiment" / "1"
    sentiment.export(str(path), verbose=False)
    written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "model-store")
    args = parser.parse_args()
    for path in build(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
