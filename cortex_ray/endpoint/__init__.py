"""An API's request path: one request in, one answer out, the way Cortex's handlers expect it.

Small modules, one concern each (as Starlette's): :mod:`.messages` (a request and its answer),
:mod:`.codec` (bodies to payloads, results to bodies), :mod:`.arguments` (what a handler
method is given), :mod:`.endpoint` (the handler's methods answering HTTP, Serve handles and
AsyncAPI workloads). Nothing here knows of Ray, Serve or the model cache.
"""

from cortex_ray.endpoint.arguments import Arguments, Method
from cortex_ray.endpoint.endpoint import ASYNC, VERSION_HEADER, Endpoint, HandlerCore
from cortex_ray.endpoint.messages import Incoming, Outgoing, error_outgoing, json_outgoing

__all__ = [
    "ASYNC",
    "VERSION_HEADER",
    "Arguments",
    "Endpoint",
    "HandlerCore",
    "Incoming",
    "Method",
    "Outgoing",
    "error_outgoing",
    "json_outgoing",
]
