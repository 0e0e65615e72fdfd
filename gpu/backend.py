"""The array backend: CuPy on a GPU when one is present, NumPy otherwise, behind one object.

Kernels take a Backend and use `backend.xp` for every array operation, so the same code runs
on both libraries. `device` is `auto` (CuPy if it imports and sees a device), `cpu` or `gpu`
(an error when there is none).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from omnilake.errors import OperationalError, InvalidParameterValue

DEVICES = ("auto", "cpu", "gpu")
# Share of free device memory one kernel call may use for its temporaries.
MEMORY_FRACTION = 0.5
CPU_BUDGET_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Backend:
    name: str          # "numpy" or "cupy"
    xp: ModuleType

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    def asarray(self, data, dtype=np.float32):
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        return array.get() if self.is_gpu else np.asarray(array)

    def budget_bytes(self) -> int:
        """Bytes a kernel may use for temporaries now: part of free device memory on a GPU."""
        if self.is_gpu:
            free, _ = self.xp.cuda.runtime.memGetInfo()
            return max(int(free * MEMORY_FRACTION), 64 * 1024 * 1024)
        return CPU_BUDGET_BYTES

    def rows_per_batch(self, bytes_per_row: int, minimum: int = 1) -> int:
        return max(minimum, self.budget_bytes() // max(bytes_per_row, 1))


@functools.lru_cache(maxsize=None)
def get_backend(device: str = "auto") -> Backend:
    if device not in DEVICES:
        raise InvalidParameterValue(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        return Backend("numpy", np)
    cupy = _cupy_with_device()
    if cupy is not None:
        return Backend("cupy", cupy)
    if device == "gpu":
        raise OperationalError(
            "device=gpu but no usable GPU: CuPy is not installed or sees no CUDA device",
            hint="install the extra with pip install 'omnilake[gpu]' on a machine with an NVIDIA "
                 "GPU, or use device=auto / OMNILAKE_DEVICE=cpu")
    return Backend("numpy", np)


def _cupy_with_device() -> ModuleType | None:
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # not installed, no driver, no device: all mean "no GPU here"
        return None
    return None
