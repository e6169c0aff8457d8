"""The edge gateway: the only public entry to Otesse Auth."""
