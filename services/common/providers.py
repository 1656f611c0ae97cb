"""What Switchboard assumes of a provider's HTTP API unless the provider's registration says otherwise."""

# The response header that carries the provider's id of a request; its cost API is asked by that id.
DEFAULT_REQUEST_ID_HEADER = "Inference-Id"

# What a provider model supports, as the same optional fields of a mapping (Registry), a
# resolution candidate and a /v1/models provider entry (Router); unset while unknown.
CAPABILITY_FIELDS = ("supports_tools", "supports_structured_output", "context_length")
