"""The Registry's domain layer: the rules (validation, tokens, prices, capabilities, conformance,
probes, replicas, the change feed) over the storage layer. It imports storage, never api."""
