"""Array and stream helpers shared by the operator wrappers.

fusekit takes any DLPack-capable array. torch is never imported here: a torch tensor is
recognised only when torch is already loaded (it must be, for the caller to hold one).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _torch():
    return sys.modules.get("torch")


def is_torch(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def arg(x: Any) -> Any:
    """What the binding receives for an array argument.

    torch refuses to export a tensor that requires grad through DLPack (model parameters do,
    even under no_grad); fusekit only reads or writes the storage, so a detached view is
    exactly the same memory.
    """
    if is_torch(x) and x.requires_grad:
        return x.detach()
    return x


def is_cuda_array(x: Any) -> bool:
    if is_torch(x):
        return x.is_cuda
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return False
    try:
        kind, _ = dev()
    except Exception:  # pragma: no cover - exporter specific
        return False
    return int(kind) in (2, 13)  # kDLCUDA, kDLCUDAManaged


def stream_for(arrays, stream: Any = None) -> int:
    """The cudaStream_t (as an int) a call runs on.

    - ``stream`` given: an int (a cudaStream_t value), or an object with ``cuda_stream``
      (torch.cuda.Stream) or ``ptr`` (cupy.cuda.Stream).
    - otherwise, for torch CUDA tensors: torch's *current* stream on their device, so fusekit
      runs where the surrounding torch work runs (and inside torch.cuda.graph capture).
    - otherwise, for other CUDA arrays (e.g. CuPy): CuPy's current stream when CuPy is loaded,
      else 0, the legacy default stream.
    - CPU arrays: 0 (ignored by the library).
    """
    if stream is not None:
        if isinstance(stream, (int, np.integer)):
            return int(stream)
        for attr in ("cuda_stream", "ptr"):
            v = getattr(stream, attr, None)
            if v is not None:
                return int(v)
        raise TypeError(f"stream: expected an int (cudaStream_t) or a stream object, got {type(stream).__name__}")
    for a in arrays:
        if a is None:
            continue
        if is_torch(a):
            if a.is_cuda:
                return int(_torch().cuda.current_stream(a.device).cuda_stream)
            continue
        if is_cuda_array(a):
            cupy = sys.modules.get("cupy")
            if cupy is not None and isinstance(a, cupy.ndarray):
                return int(cupy.cuda.get_current_stream().ptr)
            return 0
    return 0


_TORCH_DTYPES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "fp32": "float32",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
}
_NUMPY_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
}


def empty(like: Any, shape, dtype: str, name: str):
    """An uninitialised array of `dtype` ("bf16", "fp32", ...) on the device of `like`, of the
    same kind (torch tensor -> torch tensor, anything else -> NumPy array on the CPU)."""
    shape = tuple(int(s) for s in shape)
    if is_torch(like):
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, _TORCH_DTYPES[dtype]), device=like.device)
    if is_cuda_array(like):
        raise TypeError(
            f"{name}: cannot allocate an output for a non-torch CUDA array ({type(like).__name__}); pass {name}= explicitly"
        )
    if dtype not in _NUMPY_DTYPES:
        raise TypeError(f"{name}: NumPy has no {dtype} dtype; use torch tensors for {dtype} data")
    return np.empty(shape, dtype=_NUMPY_DTYPES[dtype])


def dtype_name(x: Any) -> str:
    """fusekit's name of an array's dtype ("bf16", "fp32", ...), or its own spelling."""
    dt = str(x.dtype)
    return {
        "torch.bfloat16": "bf16",
        "torch.float16": "fp16",
        "torch.float32": "fp32",
        "torch.int32": "int32",
        "torch.int64": "int64",
        "float16": "fp16",
        "float32": "fp32",
        "int32": "int32",
        "int64": "int64",
    }.get(dt, dt)


def array_shape(x: Any, name: str):
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected a DLPack-capable array (torch tensor, NumPy array, ...), got {type(x).__name__}")
    return tuple(int(s) for s in shape)


def rows_view(x: Any, name: str):
    """x with its leading dimensions merged into one: [..., N] -> [T, N], as a view (never a
    copy, so an in-place call still writes the caller's memory)."""
    if x is None or len(x.shape) == 2:
        return x
    if len(x.shape) < 2:
        raise ValueError(f"{name}: expected rank >= 2 ([tokens, features] or [..., features]), got shape {tuple(x.shape)}")
    n = x.shape[-1]
    if is_torch(x):
        try:
            return x.view(-1, n)
        except RuntimeError as e:
            raise ValueError(f"{name}: its leading dimensions cannot be merged without a copy ({e})") from None
    try:
        return np.reshape(x, (-1, n), copy=False)
    except TypeError:  # NumPy < 2.1 has no copy=; setting .shape never copies either
        v = x.view()
        try:
            v.shape = (-1, n)
            return v
        except AttributeError:
            pass
    except ValueError:
        pass
    raise ValueError(
        f"{name}: its leading dimensions (shape {tuple(x.shape)}, strides {x.strides}) cannot be merged without a copy"
    )
