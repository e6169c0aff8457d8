"""The authorize service: ``/oauth/authorize``, login, consent and the settings pages."""
