"""The BentoML peer: gre's pipeline in a BentoML service with adaptive batching."""
