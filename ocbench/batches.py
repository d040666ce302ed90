"""The data path: the prepared array to batches on the training device.

`ocbench data prepare` writes CelebA as one uint8 N x H x W x 3 array (`load_prepared` reads it).
Training holds it whole on the GPU when it fits (`load_images`), else in RAM, from where each batch
is gathered into pinned buffers and copied asynchronously (`PinnedGather`); `batch_gatherer` picks
the way, `to_model_input` turns a batch into the networks' float input on the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ocbench.errors import OcbenchError, one_line


def load_prepared(path: str | Path, mmap: bool = True) -> np.ndarray:
    """The prepared uint8 N x H x W x 3 array (`ocbench data prepare`), memory-mapped (or read whole).
    A missing, truncated (a copy cut short) or damaged file is a one-line error naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise OcbenchError(f"prepared images {path} not found; run `ocbench data prepare` first")
    rebuild = "rerun `ocbench data prepare` (with the same --config) to rebuild it"
    try:
        array = np.load(path, mmap_mode="r")  # reads the header and checks the file's length
        if not mmap and array.dtype == np.uint8:
            array = np.load(path)  # read() rather than a map: a disk error is an OSError, not SIGBUS
    except (OSError, ValueError, EOFError) as exc:
        raise OcbenchError(f"{path} is truncated or damaged ({one_line(exc, 80)}); {rebuild}") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise OcbenchError(f"{path} holds {array.dtype} {array.shape}, not uint8 N x H x W x 3; {rebuild}")
    return array


def load_images(path: str, device: torch.device, placement, runs: int = 1) -> torch.Tensor:
    """The prepared uint8 N x H x W x 3 array, whole on the GPU when it fits (`placement` "auto"; or
    True, False), else in ordinary RAM (batches reach the GPU through `batch_gatherer`'s pinned
    buffers; pinning the whole array would allocate a second, page-locked copy: 16 GiB beside the
    10 GB array for CelebA). `runs`: the runs sharing the GPU (`device.runs_sharing_gpu`)."""
    images = torch.from_numpy(load_prepared(path, mmap=False))  # read whole: batches are random gathers
    if device.type != "cuda":
        return images
    if placement == "auto":
        free, total = torch.cuda.mem_get_info(device)
        placement = fits_on_device(images.numel(), free, total, runs)
    return images.to(device) if placement else images


def fits_on_device(nbytes: int, free_bytes: int, total_bytes: int, runs: int = 1) -> bool:
    """Whether an array of `nbytes` may go on a GPU of `total_bytes` (`free_bytes` free now) that
    `runs` runs share: each run's share is its part of the card, of which the array may take 60%
    (the rest is for the networks and Inception), and it must fit in what is free now. The share
    comes from the total, not from what is free: the runs already resident have taken theirs, so
    dividing the free memory by every run would shrink each later run's share again."""
    share = total_bytes / max(runs, 1)
    return nbytes < 0.6 * min(share, free_bytes)


class PinnedGather:
    """Batches of a host array for a GPU: each batch is gathered into one of two pinned buffers and
    copied from there asynchronously, so the gather of the next batch overlaps the copy of this one.
    A buffer is refilled only once the copy out of it (two batches ago) is done, which a CUDA event
    marks (on the CPU, where tests run it, copies are synchronous and need none)."""

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device, pin: bool = True):
        shape = (batch_size, *images.shape[1:])
        self.buffers = [torch.empty(shape, dtype=images.dtype, pin_memory=pin) for _ in range(2)]
        self.copied = [None, None]  # per buffer: the event recorded after the copy out of it
        self.images, self.device, self.turn = images, device, 0
        self.event = torch.cuda.Event if device.type == "cuda" else None

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        buffer, done = self.buffers[self.turn][: len(indices)], self.copied[self.turn]
        if done is not None:
            done.synchronize()
        torch.index_select(self.images, 0, indices, out=buffer)
        batch = buffer.to(self.device, non_blocking=True, copy=True)
        if self.event is not None:  # after the copy, on the stream that queued it
            self.copied[self.turn] = self.event()
            self.copied[self.turn].record(torch.cuda.current_stream(self.device))
        self.turn ^= 1
        return batch


def batch_gatherer(images: torch.Tensor, device: torch.device, batch_size: int):
    """`gather(indices)` -> that batch of `images` (uint8) on `device`: a plain index where the array
    lives on the device (or everything is on the CPU), pinned double buffers from host RAM to a GPU."""
    if images.is_cuda or device.type != "cuda":
        return images.__getitem__
    return PinnedGather(images, batch_size, device)


def to_model_input(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], converted on the training device."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
