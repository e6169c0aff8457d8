"""The example bookings API (standing in for ``https://api.otesse.com``): a resource server
protected with :mod:`services.resource_kit`."""
