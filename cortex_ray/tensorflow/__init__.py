"""The TensorFlow handler: SavedModels run in-process (TensorFlow is imported lazily)."""

from cortex_ray.tensorflow.client import TensorFlowClient
from cortex_ray.tensorflow.saved_model import SavedModel, resolve_signature_key

__all__ = ["SavedModel", "TensorFlowClient", "resolve_signature_key"]
