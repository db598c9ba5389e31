"""A Cortex 0.35 Python handler, unchanged: an sklearn iris classifier from one `path`."""

import os
import pickle

LABELS = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class Handler:
    def __init__(self, config, model_client):
        self.client = model_client

    def load_model(self, model_path):
        with open(os.path.join(model_path, "model.pkl"), "rb") as fh:
            return pickle.load(fh)

    def handle_post(self, payload):
        model = self.client.get_model()
        row = [[float(payload[f]) for f in FEATURES]]
        return {"label": LABELS[int(model.predict(row)[0])]}
