"""What the services share: settings, logging, database, errors, the gRPC server."""
