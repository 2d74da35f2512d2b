"""The zoo's random-weight models now live in :mod:`benchmarks.zoo` (tests import from
benchmarks, never the reverse); this re-export keeps ``tests.zoo`` importable."""

from benchmarks.zoo import ZOO_MODELS, check_not_uniform, zoo_weights

__all__ = ["ZOO_MODELS", "check_not_uniform", "zoo_weights"]
