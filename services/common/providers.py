"""What Switchboard assumes of a provider's HTTP API unless the provider's registration says otherwise."""

# The response header that carries the provider's id of a request; its cost API is asked by that id.
DEFAULT_REQUEST_ID_HEADER = "Inference-Id"
