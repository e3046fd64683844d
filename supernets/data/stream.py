"""Images read from their files when needed: decoded by DataLoader workers, batch by batch.

:class:`FileImages` is a lazy array of image files (``np.asarray`` decodes them all; ``x[idx]`` only picks).
:class:`StreamedImages` stands where an :class:`~supernets.data.ImageSplits`' train tensor stands when the
training images do not fit in memory (``imagefolder``'s ``stream: true``): it has a length, a shape, a device,
prefix and index reads (decoded, normalised tensors) and :meth:`StreamedImages.batches`, which the supernet
trainer iterates so that workers decode the next batches while the current one trains (with several training
processes, each decodes only its shard of every batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from search_spaces.errors import InputError

__all__ = ["DECODE_BATCH", "FileImages", "StreamedImages"]

DECODE_BATCH = 64  # images one worker decodes per task when a whole split is decoded


class _Decode(torch.utils.data.Dataset):
    """File ``i`` as an (S, S, C) uint8 array, or the reason it cannot be read (raised in the main process:
    an exception inside a worker would come back as a traceback, not as one line naming the file)."""

    def __init__(self, files: np.ndarray, size: int, channels: int) -> None:
        self.files, self.size, self.mode = files, size, "RGB" if channels == 3 else "L"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | str]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(self.files[i]) as img:
                fitted = ImageOps.fit(img.convert(self.mode), (self.size, self.size),
                                      method=Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            return i, f"cannot read image: {err}"
        return i, np.array(fitted, dtype=np.uint8).reshape(self.size, self.size, -1)  # a copy: writable


def _as_list(batch: list) -> list:
    return batch


@dataclass(frozen=True, eq=False)
class FileImages:
    """NCHW uint8 images of ``files``, resized to ``size`` and centre-cropped, decoded when turned into an array
    (by ``workers`` DataLoader processes; 0: this one). ``x[idx]`` composes index arrays without decoding."""

    files: np.ndarray  # (N,) paths
    size: int
    channels: int
    workers: int = 0

    ndim = 4

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.channels, self.size, self.size)

    def __getitem__(self, idx: np.ndarray | slice) -> FileImages:
        return dataclasses.replace(self, files=self.files[idx])

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        index = np.arange(len(self.files))
        chunks = [index[i:i + DECODE_BATCH] for i in range(0, len(index), DECODE_BATCH)]
        images = np.empty(self.shape, np.uint8)
        for start, batch in zip(range(0, len(index), DECODE_BATCH), self.decode(chunks, pin=False)):
            images[start:start + len(batch)] = batch.numpy()
        return images if dtype is None else images.astype(dtype)

    def decode(self, index_batches: Sequence[np.ndarray], *, pin: bool) -> Iterator[torch.Tensor]:
        """Each batch of indices as an (n, C, S, S) uint8 tensor, in order; workers decode ahead."""
        loader = torch.utils.data.DataLoader(_Decode(self.files, self.size, self.channels),
                                             batch_sampler=[list(map(int, b)) for b in index_batches],
                                             num_workers=self.workers, collate_fn=_as_list, pin_memory=False)
        for batch in loader:
            out = torch.empty((len(batch), self.size, self.size, self.channels), dtype=torch.uint8,
                              pin_memory=pin)
            for row, (i, image) in enumerate(batch):
                if isinstance(image, str):
                    raise InputError(image, source=str(self.files[i]))
                out[row] = torch.from_numpy(image)
            yield out.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels-last, as CUDA kernels like it


@dataclass(frozen=True, eq=False)
class StreamedImages:
    """Normalised float training images read from ``source`` when asked for (see the module docstring)."""

    source: FileImages
    mean: np.ndarray  # (C,) of the uint8 pixel values
    std: np.ndarray  # (C,)
    device: torch.device = torch.device("cpu")
    channels_last: bool = False

    ndim = 4

    def __len__(self) -> int:
        return len(self.source)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.source.shape)

    def to(self, device: torch.device | str, non_blocking: bool = False, **_: object) -> StreamedImages:
        """The same images, delivered on ``device`` (nothing is copied now)."""
        return dataclasses.replace(self, device=torch.device(device))

    def contiguous(self, memory_format: torch.memory_format = torch.contiguous_format) -> StreamedImages:
        """The same images, delivered in ``memory_format``."""
        return dataclasses.replace(self, channels_last=memory_format == torch.channels_last)

    def __getitem__(self, idx: slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Images ``idx`` (a slice or indices) decoded now, as one normalised (n, C, S, S) tensor."""
        index = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(torch.as_tensor(idx).cpu())
        return self._finish(next(self.source.decode([index], pin=False)))

    def batches(self, order: torch.Tensor, batch_size: int, steps: int, *,
                shard: Callable[[int], slice] | None = None) -> Iterator[torch.Tensor]:
        """The first ``steps`` batches of ``order`` (indices), decoded by the source's workers ahead of use.

        ``shard``: a batch's size -> this training process's part of it (:meth:`supernets.distributed.World.shard`);
        only that part of each batch is decoded, as the in-memory path indexes only ``idx[shard(len(idx))]``.
        """
        index = np.asarray(order.cpu())
        chunks = [index[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
        if shard is not None:
            chunks = [chunk[shard(len(chunk))] for chunk in chunks]
        for images in self.source.decode(chunks, pin=self.device.type == "cuda"):
            yield self._finish(images)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW on the host -> normalised float32 on the device, in the delivery layout."""
        x = images.to(self.device, non_blocking=self.device.type == "cuda").float()
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)
