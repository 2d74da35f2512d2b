"""The Ray Serve peer: gre's pipeline in a Ray Serve deployment with ``@serve.batch``."""
