"""The client registry: OAuth clients over gRPC (``ClientRegistry``), owned in Postgres."""
