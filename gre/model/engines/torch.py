"""The ``torch`` engine: gre's own Caffe -> PyTorch conversion (:mod:`.torch_convert`), run
in float32 with TF32 off, so that its outputs stay within float32 rounding of pycaffe's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from gre.messages import Device
from gre.model.engines import Batch, EngineError, Output
from gre.model.engines.torch_convert import convert


def torch_has_cuda() -> bool:
    """``True`` when torch is importable and sees a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    return bool(torch.cuda.is_available())


class TorchEngine:
    """A converted Caffe net on the CPU, or on CUDA device 0 when the replica is on a GPU and
    torch has CUDA (the CPU otherwise; then ``device`` says ``"cpu"``).

    Raises:
        EngineError: the model does not convert, or ``output_blob`` is not one of its blobs.
    """

    name = "torch"

    def __init__(
        self, deploy: Path, weights: Path, device: Device, threads: int, output_blob: str | None
    ) -> None:
        # TF32 would round matmul/conv inputs to 10 mantissa bits: ~1e-3 off, not 1e-5.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        gpu = device.is_gpu and torch_has_cuda()
        # "gpu:0": the replica sees only its own GPU (CUDA_VISIBLE_DEVICES).
        self.device = "gpu:0" if gpu else "cpu"
        self._torch_device = torch.device("cuda:0" if gpu else "cpu")
        if not gpu and threads > 0:
            torch.set_num_threads(threads)
        for path in (deploy, weights):
            if not path.is_file():
                raise EngineError(f"no such file: {path}")
        try:
            module = convert(deploy, weights)
        except OSError as exc:
            raise EngineError(f"cannot read {deploy} + {weights}: {exc}") from exc
        self.module = module.to(self._torch_device)
        self._model = deploy
        self._output = output_blob or module.outputs[-1]
        if self._output not in module.blob_names:
            raise EngineError(f"model.output_blob {self._output!r} is not a blob of this net")

    def forward(self, batch: Batch) -> Output:
        """``(N, C, H, W) float32`` -> output blob ``(N, K) float32``.

        Raises:
            EngineError: the output has a NaN (weights or input out of range).
        """
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            out = self.module(x.to(self._torch_device))[self._output]
            result: Output = out.float().cpu().numpy().reshape(batch.shape[0], -1)
        if np.isnan(result).any():
            raise EngineError(f"{self._model}: the torch engine's output has NaN")
        return result
