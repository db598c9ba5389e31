"""The fast ingress path: HTTP served by each replica, behind a C load balancer (HAProxy).

Serve still creates, scales, health-checks and places every replica; requests no longer
pass through Serve's Python proxy or its replica request path. See ``docs/ingress.md``.
"""
