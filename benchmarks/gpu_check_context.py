"""What every section of benchmarks/gpu_check.py shares: the run's settings (:class:`Context`,
handed from the parent to each section's process as JSON), the sizes of a full and a quick
run, and where nets and images come from.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The nets whose engine throughput is measured (the issue's CaffeNet, GoogLeNet, open_nsfw).
THROUGHPUT_NETS = ("bvlc_reference_caffenet", "bvlc_googlenet", "open_nsfw")
CAFFENET = "bvlc_reference_caffenet"


@dataclass(frozen=True)
class Sizes:
    """How much each section does. ``nets``: the nets of parity and agreement (``None``:
    open_nsfw and every zoo net there is); images per net; throughput nets, batch sizes
    and timed seconds per batch size (all engines together); the service's closed-loop
    concurrency, warm-up and measured seconds, and its config variants (extra ``KEY=VALUE``
    settings per run); hey's request count for GRE's run (fewer if the budget says so) and
    its warm-up's; the scaling section's window per row (s)."""

    nets: tuple[str, ...] | None
    parity_images: int
    agreement_images: int
    throughput_nets: tuple[str, ...]
    batches: tuple[int, ...]
    seconds: float
    concurrency: int
    warmup_s: float
    measure_s: float
    variants: tuple[tuple[str, ...], ...]
    hey_requests: int
    hey_warmup: int
    scaling_s: float


FULL = Sizes(
    nets=None,
    parity_images=16,
    agreement_images=64,
    throughput_nets=THROUGHPUT_NETS,
    batches=(1, 8, 32, 128),
    seconds=2.0,
    concurrency=64,
    warmup_s=3.0,
    measure_s=8.0,
    variants=((), ("decode_threads=12",)),
    hey_requests=20000,
    hey_warmup=200,
    scaling_s=5.0,
)
#: ``--quick``: two small nets, small batches, short runs (about 2-3 minutes on 2 cores).
QUICK = Sizes(
    nets=("open_nsfw", "squeezenet_v1.1"),
    parity_images=4,
    agreement_images=8,
    throughput_nets=("open_nsfw", "squeezenet_v1.1"),
    batches=(1, 8),
    seconds=1.0,
    concurrency=8,
    warmup_s=1.0,
    measure_s=3.0,
    variants=((),),
    hey_requests=300,
    hey_warmup=40,
    scaling_s=2.0,
)


@dataclass(frozen=True)
class Context:
    """The run's settings: ``device`` (``"cpu"`` or ``"gpu"``), :class:`Sizes`, CPU threads,
    the weights source (benchmarks.gpu_check_weights.SOURCES), the shared folder (``None``:
    none) and the work folder where each section leaves its figures (``<name>.json``)."""

    device: str
    sizes: Sizes
    threads: int
    weights: str
    shared: str | None
    work: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return self.device == "gpu"

    def save(self) -> Path:
        path = Path(self.work) / "context.json"
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, work: Path) -> Context:
        data = json.loads((work / "context.json").read_text())
        sizes = data.pop("sizes")
        for key in ("nets", "throughput_nets", "batches"):
            if sizes[key] is not None:
                sizes[key] = tuple(sizes[key])
        sizes["variants"] = tuple(tuple(v) for v in sizes["variants"])
        return cls(sizes=Sizes(**sizes), **data)

    def figures_of(self, section: str) -> dict[str, Any]:
        """What an earlier section recorded (``{}`` if nothing)."""
        try:
            figures: dict[str, Any] = json.loads((Path(self.work) / f"{section}.json").read_text())[
                "figures"
            ]
        except (OSError, ValueError, KeyError):
            return {}
        return figures

    def zoo_nets(self) -> list[str]:
        """The zoo nets whose deploy prototxt the shared folder has."""
        from benchmarks.zoo import ZOO_MODELS

        if self.shared is None:
            return []
        return [
            n
            for n in ZOO_MODELS
            if (Path(self.shared) / "models" / n / "deploy.prototxt").is_file()
        ]

    def nets(self) -> list[str]:
        """Parity's and agreement's nets: the sizes' list, else open_nsfw and every zoo net."""
        return list(self.sizes.nets) if self.sizes.nets else ["open_nsfw", *self.zoo_nets()]

    def net_files(self, name: str) -> tuple[Path, Path, str]:
        """``(deploy, weights, where the weights came from)``: open_nsfw's from the ``nsfw``
        package; a zoo net's deploy from the shared folder and the weights the weights
        section made.

        Raises:
            LookupError: a zoo net that section did not make weights for (says why).
        """
        if name == "open_nsfw":
            from benchmarks.engines import model_files

            deploy, weights = model_files(name)
            return deploy, weights, "real (nsfw package)"
        made = self.figures_of("weights").get("nets", {}).get(name, {})
        if "path" not in made:
            why = made.get("error", "the weights section did not reach it")
            raise LookupError(f"{name}: no weights ({why})")
        assert self.shared is not None
        deploy = Path(self.shared) / "models" / name / "deploy.prototxt"
        return deploy, Path(made["path"]), str(made["source"])


def synthetic_jpegs(count: int) -> list[bytes]:
    """``count`` distinct image-like JPEGs (500x375, smooth seeded noise), for a machine
    without the photos."""
    import cv2
    import numpy as np

    images = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        photo = cv2.resize(coarse, (500, 375), interpolation=cv2.INTER_CUBIC)
        photo = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok
        images.append(data.tobytes())
    return images


def jpegs(count: int) -> tuple[list[bytes], str]:
    """``count`` distinct JPEGs and what they are: real photos and crops of them
    (benchmarks.data.distinct_jpegs), else :func:`synthetic_jpegs` (saying why)."""
    from benchmarks.data import DataMissing, distinct_jpegs

    try:
        return distinct_jpegs(count), "photos (benchmarks.data.distinct_jpegs)"
    except DataMissing as exc:
        return synthetic_jpegs(count), f"synthetic JPEGs: {exc}"


def net_batch(name: str, deploy: Path, images: list[bytes], size: int) -> Any:
    """``(size, C, H, W) float32``: ``images`` preprocessed for the net, repeated to
    ``size``."""
    import numpy as np

    from benchmarks.engines import preprocessor
    from gre.model.imaging import decode_bgr

    pre = preprocessor(name, deploy)
    blobs = [pre(decode_bgr(data)) for data in images[:size]]
    return np.stack([blobs[i % len(blobs)] for i in range(size)])


def cpu_threads() -> int:
    """The CPU threads a CPU engine gets: every core."""
    return os.cpu_count() or 1
