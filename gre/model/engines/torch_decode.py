"""``preprocess.decode = "gpu"``: a batch of JPEGs decoded on the torch engine's device.

torchvision.io.decode_jpeg takes the whole batch at once (nvJPEG's batched decode on a CUDA
device; libjpeg-turbo on the CPU, which is how the same code runs in the tests), then, per
image on the device: the EXIF orientation (as ``cv2.IMREAD_COLOR``), the squash
(:func:`~gre.model.engines.torch_resize.resize_linear`, cv2.resize's bytes), the centre crop and
the net's channel order: the crops :meth:`gre.model.preprocess.Preprocessor.pixels` makes on
the host, as a ``(M, C, H, W) uint8`` tensor already on the device.

What nvJPEG does not decode as libjpeg-turbo does (other formats, lossless or arithmetic-coded
JPEG, CMYK / YCCK: :attr:`gre.model.jpeg_layout.JpegLayout.device_decodable`), and any image
the device decoder refuses, is decoded on the host by the classifier's decode threads and
copied up. On the CPU the crops are the host pipeline's bytes exactly; on a GPU they differ by
nvJPEG's IDCT rounding, measured by ``benchmarks/gpu_check.py`` (docs/fidelity.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gre.messages import Outcome
from gre.model.engines import DeviceCrops, EngineError, HostDecode
from gre.model.engines.torch_resize import resize_linear
from gre.model.jpeg_layout import jpeg_layout
from gre.model.preprocess import Preprocessor, crop_offset

log = logging.getLogger("gre.model.engines.torch_decode")


def orient(image: Tensor, orientation: int) -> Tensor:
    """``(C, H, W)`` as EXIF orientation ``orientation`` (1-8) says to display it, as OpenCV
    turns an image it decodes: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90
    clockwise, 7 transverse, 8 rotate 90 counter-clockwise; 1 (or anything else) unchanged."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation in (5, 6, 7, 8):
        swapped = image.transpose(1, 2)
        flips = {5: (), 6: (2,), 7: (1, 2), 8: (1,)}[orientation]
        return swapped.flip(flips) if flips else swapped
    return image


class DeviceDecoder:
    """Encoded images -> the net's uint8 crops on ``device`` (see the module docstring).

    Args:
        preprocessor: the net's; it must take 3 channels and squash with
            ``resize_method = "opencv"`` (gray conversion and caffe_resize run on the host).
        device: the torch engine's device (``cuda:0`` or ``cpu``).

    Raises:
        EngineError: torchvision is not installed, or the preprocessing is one the device does
            not do.
    """

    def __init__(self, preprocessor: Preprocessor, device: torch.device) -> None:
        if preprocessor.input_shape[0] != 3:
            raise EngineError('preprocess.decode = "gpu" needs a net that takes 3 channels')
        if preprocessor.resize_method != "opencv":
            raise EngineError(
                'preprocess.decode = "gpu" squashes as cv2.resize: it needs '
                'preprocess.resize_method = "opencv"'
            )
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError as exc:
            raise EngineError(
                'preprocess.decode = "gpu" needs torchvision (nvJPEG): `make setup` installs '
                f"the one that matches torch ({exc})"
            ) from exc
        self._decode_jpeg = decode_jpeg
        self._rgb = ImageReadMode.RGB
        self.preprocessor = preprocessor
        self.device = device
        _, height, width = preprocessor.input_shape
        self._top = crop_offset(preprocessor.resize[0], height)
        self._left = crop_offset(preprocessor.resize[1], width)

    def crops(
        self, images: Sequence[bytes], decode_on_host: HostDecode
    ) -> tuple[DeviceCrops, list[Outcome | None]]:
        """One batch: ``(M, C, H, W) uint8`` crops on the device of the images that decoded
        (in order, ``M <= len(images)``) and, per image, ``None`` or the
        :class:`gre.messages.ItemError` the host decoder gave it. The device refuses nothing
        itself: what it cannot decode goes to the host."""
        count = len(images)
        _, height, width = self.preprocessor.input_shape
        out = torch.empty((count, 3, height, width), dtype=torch.uint8, device=self.device)
        layouts = [jpeg_layout(image) for image in images]
        on_device = [i for i, layout in enumerate(layouts) if layout and layout.device_decodable]
        decoded = self._decode(images, on_device)
        for i, image in decoded.items():
            layout = layouts[i]
            assert layout is not None
            out[i] = self._crop(orient(image, layout.orientation))
        outcomes: list[Outcome | None] = [None] * count
        host = [i for i in range(count) if i not in decoded]
        if host:
            pixels, host_outcomes = decode_on_host([images[i] for i in host])
            rows = iter(torch.from_numpy(np.ascontiguousarray(pixels)))
            for i, outcome in zip(host, host_outcomes, strict=True):
                outcomes[i] = outcome
                if outcome is None:
                    out[i] = next(rows).to(self.device)
        kept = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if len(kept) < count:
            out = out[torch.tensor(kept, dtype=torch.int64, device=self.device)]
        return DeviceCrops(out), outcomes

    def _decode(self, images: Sequence[bytes], indices: list[int]) -> dict[int, Tensor]:
        """``(3, H, W) uint8`` RGB on the device per index that decoded there: the batch in
        one call; if that fails, each image alone (one bad image costs only itself)."""
        if not indices:
            return {}
        encoded = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in indices]
        try:
            batch = self._decode_jpeg(encoded, mode=self._rgb, device=self.device)
            return dict(zip(indices, batch, strict=True))
        except RuntimeError:
            pass
        decoded: dict[int, Tensor] = {}
        for i, data in zip(indices, encoded, strict=True):
            try:
                decoded[i] = self._decode_jpeg(data, mode=self._rgb, device=self.device)
            except RuntimeError as exc:  # the host decoder answers for it
                log.debug("device decode refused image %d of the batch: %s", i, exc)
        return decoded

    def _crop(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` RGB -> the net's ``(3, h, w)`` crop, in its channel order."""
        pre = self.preprocessor
        _, height, width = pre.input_shape
        cropped = resize_linear(image, pre.resize, (self._top, self._left, height, width))
        return cropped if pre.rgb else cropped.flip(0)
