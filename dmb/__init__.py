"""dmb: a social-media backend as an actor-based distributed system on Ray Serve."""
