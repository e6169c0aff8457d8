"""The edge gateway: the public entry to Otesse Auth. Its edge also runs in the token process,
in front of the token service's own public paths (:mod:`services.gateway.in_process`)."""
