"""Ray Serve deployments (transport only) and the application topology."""
