"""The Registry service: providers, catalog, mappings, identity, resolution."""
