"""What Envoy is given, generated at deploy time from the code: its configuration (envoy.py),
its limits (limits.py), the OpenAPI document (openapi.py), all from one walk over the descriptor
set (descriptors.py). The services never import this package (docs/boundary.md)."""
