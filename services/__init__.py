"""Otesse Auth: one package per deployable service, plus the shared library in ``common``."""
