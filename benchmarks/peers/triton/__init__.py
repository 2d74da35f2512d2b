"""The Triton peer: gre's pipeline as a PyTriton model behind Triton's dynamic batcher."""
