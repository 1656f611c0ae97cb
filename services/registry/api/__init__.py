"""The Registry's API layer: one gRPC servicer per module (admin, accounts, partners, internal).
Each imports the domain and storage layers, never another servicer."""
