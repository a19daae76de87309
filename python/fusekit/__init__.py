"""fusekit: fused CUDA kernels for LLM inference, zero-copy on torch tensors and NumPy arrays.

    fusekit.qk_rmsnorm(qkv, q_weight, k_weight, num_q_heads=..., num_kv_heads=..., head_dim=...)
    fusekit.MoE(w1, w2, top_k=..., max_tokens=...)(x, router_logits)
    fusekit.moe_forward(x, router_logits, w1, w2, top_k=...)

Arrays: anything DLPack-capable (torch CPU/CUDA tensors, NumPy, ...), passed zero-copy.
Streams: work on torch CUDA tensors runs on torch's *current* stream (so it composes with
torch.cuda.stream(...) and torch.cuda.graph capture); pass stream= to override.
Errors: ValueError for a bad shape, rank, stride, alignment, device, range or overlap;
TypeError for a dtype fusekit does not accept there (or a non-array); NotImplementedError
for what this build or device cannot do; RuntimeError for CUDA errors. The message names the
argument, what was expected and what was given, and nothing was written.
"""

from . import _fusekit
from ._util import stream_for
from .moe import (
    MoE,
    MoeAlignment,
    align_block_m,
    allocate_workspace,
    make_config as moe_config,
    moe_align_capacity,
    moe_forward,
    moe_forward_routed,
    moe_prepared_config,
    moe_workspace_size,
)
from .moe import align as moe_align
from .moe import finalize as moe_finalize
from .moe import route as moe_route
from .qk_norm import qk_rmsnorm

__version__ = "0.1.0"

#: True when this build has the CUDA backend (nvcc was found at build time).
with_cuda = bool(_fusekit.with_cuda)

__all__ = [
    "MoE",
    "MoeAlignment",
    "align_block_m",
    "allocate_workspace",
    "moe_align",
    "moe_align_capacity",
    "moe_config",
    "moe_finalize",
    "moe_forward",
    "moe_forward_routed",
    "moe_prepared_config",
    "moe_route",
    "moe_workspace_size",
    "qk_rmsnorm",
    "stream_for",
    "with_cuda",
]
