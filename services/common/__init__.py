"""The library every service shares. It has no entry point and imports no service."""
