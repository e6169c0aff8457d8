"""The token service: ``/oauth/token``, revocation, introspection, JWKS and gRPC validation."""
