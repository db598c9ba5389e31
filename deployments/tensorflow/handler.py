"""A TensorFlow handler: Keras SavedModels behind `tensorflow_client.predict`.

POST {"model": "iris", "features": [5.1, 3.5, 1.4, 0.2]}          (a batch of one)
POST {"model": "sentiment", "text": ["great movie", "awful film"]}
"""

LABELS = ["setosa", "versicolor", "virginica"]


class Handler:
    def __init__(self, config, tensorflow_client):
        self.client = tensorflow_client

    def handle_post(self, payload):
        version = payload.get("version", "latest")
        if payload.get("model") == "sentiment":
            out = self.client.predict({"text": payload["text"]}, "sentiment", version)
            return {"positive": [round(p, 3) for p in out["output_0"]]}
        out = self.client.predict({"features": payload["features"]}, "iris", version, keep_shapes=True)
        return {"labels": [LABELS[row.index(max(row))] for row in out["output_0"]]}
