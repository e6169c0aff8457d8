"""Grant types of the token endpoint, one module each (RFC 6749 §4.1.3, §6).

The contract they keep is :mod:`services.token.grants.base`; the token endpoint dispatches from
a dict ``grant_type → grant`` built from the grants the app registers, and the server metadata
(RFC 8414) lists the same ones.
"""
