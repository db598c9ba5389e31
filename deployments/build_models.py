"""Build the example model folders (small models trained on the spot).

    python deployments/build_models.py [--out deployments/model-store]

* ``iris/model.pkl``: a scikit-learn logistic regression (API ``iris``, single ``path``).
* ``onnx/<model>/<version>/model.onnx``: two versioned ONNX classifiers
  (API ``onnx-multi``, a ``dir`` with ``cache_size`` and ``disk_cache_size``).
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
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE / "model-store")
    args = parser.parse_args()
    for path in build(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
