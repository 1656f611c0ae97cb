"""The Router service: OpenAI-compatible inference routes, provider selection, failover."""
