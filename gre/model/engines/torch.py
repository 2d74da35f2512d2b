"""The ``torch`` engine: gre's own Caffe -> PyTorch conversion (:mod:`.torch_convert`).

In ``fp32`` (the default) TF32 is off, so that outputs stay within float32 rounding of
pycaffe's. ``fp16`` / ``bf16`` run the converted module in that dtype with ``channels_last``
memory format, a few layers in float32 (see :data:`~gre.model.engines.torch_params.Compute`),
the output cast back to float32; accuracy is measured in docs/fidelity.md.

Speed levers, each a constructor switch so that it can be measured on and off; all are for
CUDA and off on the CPU, where the same eager forward runs:

* ``cudnn_benchmark``: cuDNN tries its convolution algorithms per input shape and keeps the
  fastest (``torch.backends.cudnn.benchmark``); the first forward of each shape pays for it,
  i.e. the replica's warm-up, since batches then run in power-of-two chunks only.
* ``cuda_graphs``: one CUDA graph per power-of-two batch size, captured on the first forward
  of that size (the replica's warm-up runs every size up to ``max_batch_size``, largest
  first), replayed from static input and output buffers: one launch per chunk instead of one
  per kernel. All graphs share one memory pool (they never run concurrently).
* ``pinned_memory``: batches go through page-locked host memory (PyTorch's caching host
  allocator, so the buffers are reused) with ``non_blocking`` copies, one synchronisation
  per forward.
* uint8 to the device (:meth:`TorchEngine.forward_pixels`): the classifier ships crops as
  ``uint8`` (a quarter of float32's bytes over PCIe) and the mean and scales run on the
  device, the same float32 operations in the same order as NumPy's, so the same bits.
* ``chunked``: a batch runs as power-of-two chunks, largest first (13 = 8 + 4 + 1, as the
  opencv engine's nets), so that only the warmed shapes ever run. Default: on when CUDA
  graphs or cuDNN autotuning are; graphs need it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gre.messages import Device
from gre.model.engines import (
    Batch,
    BlobShapes,
    DeviceCrops,
    EngineError,
    Features,
    Output,
    unknown_blobs_error,
)
from gre.model.engines.opencv import power_of_two_chunks
from gre.model.engines.torch_convert import CaffeModule, convert
from gre.model.preprocess import Normalization, Pixels, Preprocessor

if TYPE_CHECKING:
    from gre.model.engines.torch_decode import DeviceDecoder

#: ``model.precision`` -> the module's dtype.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_has_cuda() -> bool:
    """``True`` when torch is importable and sees a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class Levers:
    """The speed levers in effect (requested and possible on this device; see the module
    docstring)."""

    cudnn_benchmark: bool
    cuda_graphs: bool
    pinned_memory: bool
    chunked: bool


@dataclass
class _Graph:
    """A captured forward of one batch shape: ``replay`` reads ``static_in`` ``(n, C, H, W)``
    float32 and writes ``static_out`` ``(n, K)`` float32, both on the GPU."""

    graph: torch.cuda.CUDAGraph
    static_in: Tensor
    static_out: Tensor


class TorchEngine:
    """A converted Caffe net on the CPU, or on CUDA device 0 when the replica is on a GPU and
    torch has CUDA (the CPU otherwise; then ``device`` says ``"cpu"``).

    Args:
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (``model.precision``).
        cudnn_benchmark, cuda_graphs, pinned_memory: CUDA speed levers, on by default, off on
            the CPU whatever is asked (:attr:`levers` says what is in effect).
        chunked: run batches as power-of-two chunks; ``None``: when graphs or autotuning are on.

    Raises:
        EngineError: an unknown precision, the model does not convert, or ``output_blob`` is not
            one of its blobs.
    """

    name = "torch"

    def __init__(
        self,
        deploy: Path,
        weights: Path,
        device: Device,
        threads: int,
        output_blob: str | None,
        precision: str = "fp32",
        *,
        cudnn_benchmark: bool = True,
        cuda_graphs: bool = True,
        pinned_memory: bool = True,
        chunked: bool | None = None,
    ) -> None:
        if precision not in DTYPES:
            raise EngineError(f"precision {precision!r} is not one of {', '.join(DTYPES)}")
        # TF32 would round matmul/conv inputs to 10 mantissa bits: ~1e-3 off, not 1e-5.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        gpu = device.is_gpu and torch_has_cuda()
        # "gpu:0": the replica sees only its own GPU (CUDA_VISIBLE_DEVICES).
        self.device = "gpu:0" if gpu else "cpu"
        self._torch_device = torch.device("cuda:0" if gpu else "cpu")
        if not gpu and threads > 0:
            torch.set_num_threads(threads)
        graphs = cuda_graphs and gpu
        self.levers = Levers(
            cudnn_benchmark=cudnn_benchmark and gpu,
            cuda_graphs=graphs,
            pinned_memory=pinned_memory and gpu,
            chunked=graphs or ((cudnn_benchmark and gpu) if chunked is None else chunked),
        )
        if self.levers.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.module = self._load(deploy, weights)
        self._model = deploy
        self._output = output_blob or self.module.outputs[-1]
        if self._output not in self.module.blob_names:
            raise EngineError(f"model.output_blob {self._output!r} is not a blob of this net")
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        self._graph_pool: Any = None  # torch.cuda.graph_pool_handle(), once captured
        # The mean on the device, per mean array (the preprocessor's, so one in practice).
        self._means: dict[int, tuple[np.ndarray[Any, Any], Tensor]] = {}

    def _load(self, deploy: Path, weights: Path) -> CaffeModule:
        for path in (deploy, weights):
            if not path.is_file():
                raise EngineError(f"no such file: {path}")
        try:
            module = convert(deploy, weights)
        except OSError as exc:
            raise EngineError(f"cannot read {deploy} + {weights}: {exc}") from exc
        if self.dtype != torch.float32:
            module.set_precision(self.dtype, channels_last=True)
        return module.to(self._torch_device)

    def forward(self, batch: Batch) -> Output:
        """``(N, C, H, W) float32`` -> output blob ``(N, K) float32`` (``(0, 0)`` for N = 0).

        Raises:
            EngineError: the output has a NaN; the message names the first blob with one.
            torch.OutOfMemoryError: the batch does not fit on the device.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[0] == 0:
            return np.empty((0, 0), dtype=np.float32)
        with torch.inference_mode():
            host = torch.from_numpy(batch)
            if self.levers.pinned_memory:
                host = host.pin_memory()
            result = self._run_chunked(host)
        if np.isnan(result).any():
            raise self._nan_error(batch)
        return result

    def forward_pixels(self, pixels: Pixels, normalization: Normalization) -> Output:
        """``(N, C, H, W)`` uint8 crops -> output blob ``(N, K) float32``: the crops go to the
        device as they are and ``normalization`` runs there, then as :meth:`forward`.

        Raises:
            EngineError: the output has a NaN; the message names the first blob with one.
            torch.OutOfMemoryError: the batch does not fit on the device.
        """
        pixels = np.ascontiguousarray(pixels)
        if pixels.shape[0] == 0:
            return np.empty((0, 0), dtype=np.float32)
        with torch.inference_mode():
            host = torch.from_numpy(pixels)
            if self.levers.pinned_memory:
                host = host.pin_memory()
            on_device = host.to(self._torch_device, non_blocking=self.levers.pinned_memory)
            return self._forward_on_device(on_device, normalization)

    def forward_crops(self, crops: DeviceCrops, normalization: Normalization) -> Output:
        """:meth:`forward_pixels` of crops a :meth:`device_decoder` left on the device.

        Raises:
            EngineError, torch.OutOfMemoryError: as :meth:`forward_pixels`.
        """
        if not len(crops):
            return np.empty((0, 0), dtype=np.float32)
        with torch.inference_mode():
            return self._forward_on_device(crops.tensor, normalization)

    def device_decoder(self, preprocessor: Preprocessor) -> DeviceDecoder:
        """JPEG decode into this engine's device (``preprocess.decode = "gpu"``; torchvision's
        libjpeg-turbo on the CPU), to the crops ``preprocessor`` makes.

        Raises:
            EngineError: torchvision is missing, or ``preprocessor`` is one the device does not
                reproduce (1 channel, ``resize_method = "caffe"``).
        """
        from gre.model.engines.torch_decode import DeviceDecoder

        return DeviceDecoder(preprocessor, self._torch_device)

    def _run_chunked(self, x: Tensor) -> Output:
        """``x`` through the net as :meth:`chunk_sizes` splits it, the outputs joined."""
        outputs, start = [], 0
        for size in self.chunk_sizes(x.shape[0]):
            outputs.append(self._run(x[start : start + size]))
            start += size
        return self._to_numpy(torch.cat(outputs) if len(outputs) > 1 else outputs[0])

    def _forward_on_device(self, pixels: Tensor, normalization: Normalization) -> Output:
        result = self._run_chunked(self._normalize(pixels, normalization))
        if np.isnan(result).any():
            raise self._nan_error(normalization.apply(pixels.cpu().numpy()))
        return result

    def _normalize(self, pixels: Tensor, normalization: Normalization) -> Tensor:
        """:meth:`Normalization.apply` in torch, on the pixels' device: float32 scalars and
        mean, so each step rounds as NumPy's does."""
        x = pixels.to(torch.float32)
        if normalization.pixel_scale != 1.0:
            x.mul_(torch.tensor(normalization.pixel_scale, dtype=torch.float32))
        if normalization.mean is not None:
            x.sub_(self._device_mean(normalization.mean))
        if normalization.input_scale != 1.0:
            x.mul_(torch.tensor(normalization.input_scale, dtype=torch.float32))
        return x

    def _device_mean(self, mean: np.ndarray[Any, Any]) -> Tensor:
        cached = self._means.get(id(mean))
        if cached is None or cached[0] is not mean:
            tensor = torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32))
            cached = (mean, tensor.to(self._torch_device))
            self._means[id(mean)] = cached
        return cached[1]

    def blob_shapes(self) -> BlobShapes:
        """Every blob of the converted net and one image's shape of it (measured by the
        converter's probe forward)."""
        return dict(self.module.blob_shapes)

    def forward_blobs(self, batch: Batch, blobs: Collection[str]) -> tuple[Output, Features]:
        """:meth:`forward` and the named blobs, each ``(N, D) float32`` (cast from the
        module's dtype). Such batches run eagerly, chunked as :meth:`forward`, never through
        a CUDA graph: a graph keeps only the output blob.

        Raises:
            EngineError: a name that is not a blob of the net; NaN in the output.
        """
        error = unknown_blobs_error(blobs, self.module.blob_shapes)
        if error is not None:
            raise error
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.shape[0] == 0:
            empty = np.empty((0, 0), dtype=np.float32)
            return empty, {name: empty for name in blobs}
        keep = tuple(dict.fromkeys((self._output, *blobs)))
        pieces: dict[str, list[Tensor]] = {name: [] for name in keep}
        with torch.inference_mode():
            start = 0
            for size in self.chunk_sizes(batch.shape[0]):
                x = torch.from_numpy(batch[start : start + size]).to(self._torch_device)
                if self.dtype != torch.float32:
                    x = x.to(self.dtype, memory_format=torch.channels_last)
                values = self.module(x, keep=keep)
                for name in keep:
                    pieces[name].append(values[name].reshape(size, -1).float())
                start += size
            arrays = {name: self._to_numpy(torch.cat(p)) for name, p in pieces.items()}
        output = arrays[self._output]
        if np.isnan(output).any():
            raise self._nan_error(batch)
        return output, {name: arrays[name] for name in blobs}

    def chunk_sizes(self, n: int) -> list[int]:
        """The sizes a batch of ``n`` runs as: powers of two, largest first, when chunked."""
        return power_of_two_chunks(n) if self.levers.chunked else [n]

    def _run(self, host: Tensor) -> Tensor:
        """One chunk, ``(n, C, H, W)`` float32 on the host or the device -> ``(n, K)`` float32
        on the device (a graph's static output when graphs are on: read it before the next
        replay)."""
        if self.levers.cuda_graphs:
            graph = self._graphs.get(tuple(host.shape)) or self._capture(tuple(host.shape))
            graph.static_in.copy_(host, non_blocking=self.levers.pinned_memory)
            graph.graph.replay()
            return graph.static_out
        return self._eager(host.to(self._torch_device, non_blocking=self.levers.pinned_memory))

    def _eager(self, x: Tensor) -> Tensor:
        """``(n, C, H, W)`` float32 on the device -> the output blob ``(n, K)`` float32."""
        if self.dtype != torch.float32:
            x = x.to(self.dtype, memory_format=torch.channels_last)
        out: Tensor = self.module(x, keep=(self._output,))[self._output]
        return out.reshape(x.shape[0], -1).float()

    def _capture(self, shape: tuple[int, ...]) -> _Graph:
        """Capture the forward of ``shape`` as a CUDA graph (torch.cuda.graphs docs: warm-up
        iterations on a side stream first, so that cuDNN's autotuning and lazy
        initialisation happen outside the capture). CUDA only."""
        static_in = torch.zeros(shape, dtype=torch.float32, device=self._torch_device)
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._eager(static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            static_out = self._eager(static_in)
        self._graphs[shape] = _Graph(graph, static_in, static_out)
        return self._graphs[shape]

    def _to_numpy(self, out: Tensor) -> Output:
        """``(N, K)`` float32 on the device -> NumPy; from a GPU through pinned memory, one
        synchronisation."""
        if out.device.type == "cpu":
            return out.numpy()
        host = torch.empty(out.shape, dtype=torch.float32, pin_memory=self.levers.pinned_memory)
        host.copy_(out, non_blocking=self.levers.pinned_memory)
        torch.cuda.current_stream().synchronize()
        return host.numpy()

    def _nan_error(self, batch: Batch) -> EngineError:
        """The error for an output with NaN: re-runs ``batch`` eagerly (only on this failure)
        to name the first layer top with a NaN, and an earlier infinity if any (fp16 overflows
        above 65504)."""
        where = f"{self._model}: the torch engine's output has NaN ({self.precision})"
        if np.isnan(batch).any():
            return EngineError(f"{where}: the input batch has NaN")
        first_nan: list[str] = []
        first_inf: list[str] = []
        specs = {spec.name: spec for spec in self.module.specs}

        def check(layer: str, tops: list[Tensor]) -> None:
            spec = specs[layer]
            for blob, top in zip(spec.tops, tops, strict=True):
                found = f"blob {blob!r} (top of layer {layer!r}, {spec.type})"
                if not first_nan and torch.isnan(top).any():
                    first_nan.append(found)
                if not first_inf and not first_nan and torch.isinf(top).any():
                    first_inf.append(found)

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._torch_device)
            if self.dtype != torch.float32:
                x = x.to(self.dtype, memory_format=torch.channels_last)
            self.module(x, on_layer=check)
        if not first_nan:
            return EngineError(f"{where} (not reproduced when re-run layer by layer)")
        inf = f", after an infinity first in {first_inf[0]}" if first_inf else ""
        return EngineError(f"{where}: the first blob with NaN is {first_nan[0]}{inf}")
