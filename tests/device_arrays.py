"""A stand-in for CuPy that runs on NumPy but keeps CuPy's one rule that bites: device
arrays never turn into NumPy arrays implicitly, and device functions refuse NumPy arrays.

CI has no GPU, so without this the engine's GPU path runs nowhere before a GPU check; with it,
a device array leaking into NumPy code (np.asarray, np.concatenate, pa.array of one) fails
here with CuPy's own TypeError. Only what OmniLake's kernels use is provided."""

from __future__ import annotations

import types

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


def _down(value):
    """Device arrays to their NumPy data; a NumPy array where a device one belongs fails as
    in CuPy."""
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError(f"Unsupported type {type(value)}")
    if isinstance(value, (list, tuple)):
        return type(value)(_down(v) for v in value)
    return value


def _up(value):
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, tuple):
        return tuple(_up(v) for v in value)
    if isinstance(value, list):
        return [_up(v) for v in value]
    return value


class DeviceArray(NDArrayOperatorsMixin):
    __array_priority__ = 1000

    def __init__(self, data: np.ndarray):
        self._data = data

    def get(self) -> np.ndarray:
        return self._data.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = tuple(_down(o) for o in kwargs["out"])
        result = getattr(ufunc, method)(*(_down(i) for i in inputs), **kwargs)
        return _up(result)

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"{func.__name__} of a device array: call the device library's function")

    # -- what the kernels use --------------------------------------------------------------
    shape = property(lambda self: self._data.shape)
    ndim = property(lambda self: self._data.ndim)
    dtype = property(lambda self: self._data.dtype)
    size = property(lambda self: self._data.size)
    T = property(lambda self: DeviceArray(self._data.T))

    def __len__(self):
        return len(self._data)

    def __getitem__(self, key):
        return _up(self._data[_index(key)])

    def __setitem__(self, key, value):
        self._data[_index(key)] = _down(value) if isinstance(value, DeviceArray) else value

    def __bool__(self):
        return bool(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    def __iter__(self):
        raise TypeError("iterating over a device array: call .get() first")

    def astype(self, dtype, copy=True):
        return DeviceArray(self._data.astype(dtype, copy=copy))

    def reshape(self, *shape):
        return DeviceArray(self._data.reshape(*shape))

    def transpose(self, *axes):
        return DeviceArray(self._data.transpose(*axes))

    def copy(self):
        return DeviceArray(self._data.copy())

    def tolist(self):
        raise TypeError("tolist of a device array: call .get() first")

    def __getattr__(self, name):  # reductions: min, max, sum, any, all, mean
        if name in ("min", "max", "sum", "any", "all", "mean", "argmin", "argmax"):
            method = getattr(self._data, name)
            return lambda *a, **k: _up(np.asarray(method(*a, **k)))
        raise AttributeError(name)


def _index(key):
    # CuPy indexes with device arrays, Python numbers and slices (and, like NumPy, tuples).
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, DeviceArray):
        return key._data
    return key


def _function(name):
    numpy_function = getattr(np, name)

    def device_function(*args, **kwargs):
        kwargs = {k: _down(v) for k, v in kwargs.items()}
        return _up(numpy_function(*(_down(a) for a in args), **kwargs))
    return device_function


def _asarray(data, dtype=None):
    if isinstance(data, DeviceArray):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    return DeviceArray(np.array(data, dtype=dtype))  # a copy, as host-to-device is


def _argsort(a, axis=-1):
    return DeviceArray(np.argsort(_down(a), axis=axis, kind="stable"))  # CuPy's is stable


def module() -> types.ModuleType:
    """The stand-in `cupy` module."""
    xp = types.ModuleType("strict_device")
    for name in ("einsum", "maximum", "minimum", "sqrt", "abs", "where", "clip", "isnan",
                 "isinf", "isfinite", "exp", "tanh", "argpartition", "take_along_axis",
                 "concatenate", "broadcast_to", "arange", "full", "zeros", "zeros_like",
                 "nonzero", "flatnonzero", "copyto", "ascontiguousarray", "bincount", "unique",
                 "stack", "full_like", "empty"):
        setattr(xp, name, _function(name))
    xp.asarray = _asarray
    xp.argsort = _argsort
    xp.linalg = types.SimpleNamespace(norm=_function_of(np.linalg.norm))
    xp.float32, xp.float64, xp.int64, xp.int32 = np.float32, np.float64, np.int64, np.int32
    xp.inf, xp.nan = np.inf, np.nan
    xp.ndarray = DeviceArray
    xp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        memGetInfo=lambda: (1 << 30, 1 << 31), getDeviceCount=lambda: 1))
    return xp


def _function_of(numpy_function):
    def device_function(*args, **kwargs):
        return _up(numpy_function(*(_down(a) for a in args), **kwargs))
    return device_function
