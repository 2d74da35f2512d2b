"""gre: a low-latency image-classification microservice for Caffe models, with dynamic batching."""

__version__ = "0.1.0"
