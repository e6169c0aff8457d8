"""``otesse-auth``: the operator's command line. It may import every service (it is not one)."""
