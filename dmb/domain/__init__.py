"""Domain logic shared by the Serve deployments and the actors; transport-free."""
