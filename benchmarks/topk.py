"""The host's work after a forward: top-k (and softmax) of a batch, microseconds per image.

With a GPU running the net, what is left on the replica's CPU per image is the decode, the
squash and crop, and this. ``python -m benchmarks.topk`` prints gre's
:func:`gre.model.classifier.top_k_rows` beside the plain way (a stable argsort of every
class, then the first k), on the softmax of random logits of ``--classes`` classes, checks
that both give the same answer, and prints :func:`gre.model.classifier.softmax`'s cost.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from gre.messages import Prediction
from gre.model.classifier import softmax, top_k_rows

Rows = npt.NDArray[np.float32]


def full_sort_top_k(rows: Rows, ks: Sequence[int]) -> list[Prediction]:
    """The reference: every class of every row sorted (stable, descending), then cut."""
    order = np.argsort(-rows, axis=1, kind="stable")[:, : max(ks)]
    values = np.take_along_axis(rows, order, axis=1)
    indices, confidences = order.tolist(), values.tolist()
    return [Prediction(tuple(indices[i][:k]), tuple(confidences[i][:k])) for i, k in enumerate(ks)]


def per_image_us(call: Callable[[], object], batch: int, repeat: int) -> float:
    """Best of 5 timings of ``repeat`` calls, as microseconds per image of a ``batch``."""
    best = min(timeit.repeat(call, number=repeat, repeat=5)) / repeat
    return best / batch * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table; exit with an error if gre's answers differ from the references'."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topk", description=__doc__)
    parser.add_argument("--batch", type=int, default=32, help="images per batch (32)")
    parser.add_argument("--classes", type=int, default=1000, help="classes (1000)")
    parser.add_argument("--top-k", type=int, default=5, help="k asked of every image (5)")
    parser.add_argument("--repeat", type=int, default=50, help="calls per timing (50)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 4.0, (args.batch, args.classes)).astype(np.float32)
    rows = softmax(logits)
    ks = [args.top_k] * args.batch
    if top_k_rows(rows, ks) != full_sort_top_k(rows, ks):
        parser.exit(1, "top_k_rows differs from the full sort\n")
    print(f"batch {args.batch}, {args.classes} classes, top_k {args.top_k}: us per image")
    print(f"{'step':<10}{'gre':>10}{'full sort':>12}{'ratio':>8}")
    gre_us = per_image_us(lambda: top_k_rows(rows, ks), args.batch, args.repeat)
    ref_us = per_image_us(lambda: full_sort_top_k(rows, ks), args.batch, args.repeat)
    print(f"{'top_k':<10}{gre_us:>10.1f}{ref_us:>12.1f}{gre_us / ref_us:>8.2f}")
    softmax_us = per_image_us(lambda: softmax(logits), args.batch, args.repeat)
    print(f"{'softmax':<10}{softmax_us:>10.1f}")


if __name__ == "__main__":
    main()
