"""Hosts and addresses: which ones only this machine reaches, and what a client dials.

One place for what the SDK, the CLI, the cluster code and the balancer all need to know of
a listen host (``0.0.0.0`` listens everywhere, but a client on this machine dials 127.0.0.1).
"""

from __future__ import annotations

__all__ = ["ANY_HOST", "base_url", "dial_host", "is_loopback", "is_loopback_address"]

ANY_HOST = ("0.0.0.0", "::")
"""Listen hosts that mean every interface."""


def is_loopback(host: str) -> bool:
    """Only this machine can reach a server bound to ``host``."""
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def is_loopback_address(address: str) -> bool:
    """``host:port`` names a loopback host."""
    return is_loopback(address.rpartition(":")[0])


def dial_host(host: str) -> str:
    """The host a client on this machine dials to reach a server listening on ``host``."""
    return "127.0.0.1" if host in ANY_HOST else host


def base_url(host: str, port: int) -> str:
    """``http://host:port`` as a client on this machine reaches a server listening there."""
    return f"http://{dial_host(host)}:{port}"
