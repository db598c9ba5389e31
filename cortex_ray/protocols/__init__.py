"""The protocols clients of other model servers already speak, beside an API's handler: TF
Serving's REST API (:mod:`.v1`) and the Open Inference Protocol (:mod:`.v2`), over the API's
models (:class:`~.models.ProtocolModels`, which the replica provides). Nothing here knows of
Ray, Serve or the model cache."""

from cortex_ray.protocols.models import ProtocolModels, Signature
from cortex_ray.protocols.routes import PROTOCOLS, ProtocolRoutes, protocol_of
from cortex_ray.protocols.tensors import TensorSpec

__all__ = ["PROTOCOLS", "ProtocolModels", "ProtocolRoutes", "Signature", "TensorSpec", "protocol_of"]
