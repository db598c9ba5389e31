"""Many versioned ONNX models behind one API, with a two-tier LRU cache.

POST {"model": "logreg", "version": "latest", "features": [[5.1, 3.5, 1.4, 0.2]]}
"""

import os

import numpy as np

LABELS = ["setosa", "versicolor", "virginica"]


class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        import onnxruntime as ort

        return ort.InferenceSession(
            os.path.join(model_path, "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def handle_post(self, payload):
        session, version = self.client.get_model_and_version(
            payload.get("model"), payload.get("version", "latest")
        )
        features = np.asarray(payload["features"], dtype=np.float32)
        labels = session.run(None, {session.get_inputs()[0].name: features})[0]
        return {
            "model": payload.get("model"),
            "version": version,
            "labels": [LABELS[int(i)] for i in labels],
        }

    def handle_get(self):
        return {"models": self.client.models}
