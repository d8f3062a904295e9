"""The contract's derived vectors (SPEC §4, §7) and the fixed-order sum they are normalized with.

Every backend builds its per-block constants from here, and the oracle its
per-nonce vectors, so no backend needs the oracle and the tests check these
vectors against the contract's streams on their own:

- ``lm_head``: ``W = 0.02 * N(seed_lm_head, D*H).view(D, H)`` (float32);
- ``target``: ``t = N(seed_target, D) / ||N||`` (float64);
- ``sign_flips``: ``+1`` where ``U(seed_signs) > 0.5``, else ``-1`` (float32);
- ``reflection_vectors``: ``v_r = N(seed_r, H) / ||N||`` (float64);
- ``layer_vector``: ``v_i = N(seed_layer_i, H) / ||N||`` (float32);
- ``pick_indices``: the k coordinates of the artifact scheme, in the canonical order (SPEC-ARTIFACTS §4-5);
- ``haar_vectors``: ``u_j = N(seed_haar_j, k) / (||N|| + 1e-30)`` of the artifact scheme (float64);
- ``random_projection``: ``P = 0.01 * N(seed_projection, H*H).view(H, H)`` (float32, SPEC §10), and
  ``project``: ``x + x @ P`` in a fixed order.

Norms use :func:`tree_sum`, a fixed pairwise order of elementwise adds, so a
vector never depends on the device's reduction heuristics or thread count.
"""

from __future__ import annotations

import torch

from . import rng
from ._checks import check_int, check_nonces, check_str
from .constants import HAAR_EPS, LM_HEAD_SCALE, POC_OUTPUT_DIM, RANDOM_PROJECTION_SCALE
from .seeds import derive_artifact_seeds, layer_seed, lm_head_seed, random_projection_seed, target_seed

__all__ = [
    "haar_vectors",
    "layer_vector",
    "lm_head",
    "norm",
    "pick_indices",
    "project",
    "random_projection",
    "reflection_vectors",
    "sign_flips",
    "target",
    "tree_sum",
]


def tree_sum(x: torch.Tensor) -> torch.Tensor:
    """Return the sum over the last dim in a fixed pairwise order, same dtype and device.

    Element ``i`` is added to element ``i + m/2`` for ``m`` the next power of two
    (zero padded), and so on down to one value. Only elementwise adds are used,
    so the result of a row never depends on the other rows, the device's
    reduction heuristics or the thread count.
    """
    n = x.shape[-1]
    if n == 0:
        return x.new_zeros(x.shape[:-1])
    m = 1 << (n - 1).bit_length()
    if m != n:
        x = torch.nn.functional.pad(x, (0, m - n))
    while m > 1:
        m //= 2
        x = x[..., :m] + x[..., m:]
    return x[..., 0]


def norm(x: torch.Tensor) -> torch.Tensor:
    """Return the L2 norm over the last dim with :func:`tree_sum` (same dtype and device)."""
    return torch.sqrt(tree_sum(x * x))


def lm_head(block_hash: str, hidden_size: int, output_dim: int = POC_OUTPUT_DIM, *, device="cpu") -> torch.Tensor:
    """Return the random lm_head ``W = 0.02 * N(seed, D*H).view(D, H)`` as float32 ``[D, H]`` on ``device``."""
    check_str(block_hash, "block_hash")
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    output_dim = check_int(output_dim, "output_dim", 1)
    w = rng.normal(lm_head_seed(block_hash), output_dim * hidden_size, device=torch.device(device))
    return w.mul_(LM_HEAD_SCALE).view(output_dim, hidden_size)


def target(block_hash: str, output_dim: int = POC_OUTPUT_DIM, *, device="cpu") -> torch.Tensor:
    """Return the unit target ``t = N(seed, D) / ||N||`` as float64 ``[D]`` on ``device``."""
    check_str(block_hash, "block_hash")
    output_dim = check_int(output_dim, "output_dim", 1)
    t = rng.normal(target_seed(block_hash), output_dim, device=torch.device(device)).double()
    return t / norm(t)


def sign_flips(seeds: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """Return the sign flips (+1 when ``U > 0.5``, else -1) as float32 ``[B, H]`` on ``seeds``' device."""
    u = rng.uniform(seeds.reshape(-1), hidden_size)
    return torch.where(u > 0.5, 1.0, -1.0).to(torch.float32)


def reflection_vectors(seeds: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """Return unit vectors ``N(seed, H) / ||N||`` as float64 ``[*seeds.shape, H]`` on ``seeds``' device."""
    v = rng.normal(seeds.reshape(-1), hidden_size).double()
    v = v / norm(v)[:, None]
    return v.view(*seeds.shape, hidden_size)


def layer_vector(block_hash: str, layer: int, hidden_size: int, *, device="cpu") -> torch.Tensor:
    """Return the unit layer-hook vector ``v_i = N(seed_layer_i, H) / ||N||`` as float32 ``[H]`` on ``device``."""
    check_str(block_hash, "block_hash")
    layer = check_int(layer, "layer", 0)
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    v = rng.normal(layer_seed(block_hash, layer), hidden_size, device=torch.device(device)).double()
    return (v / norm(v)).float()


def haar_vectors(seeds: torch.Tensor, k: int) -> torch.Tensor:
    """Return the Haar reflection vectors ``N(seed, k) / (||N|| + 1e-30)`` as float64 ``[*seeds.shape, k]``.

    SPEC-ARTIFACTS §4: ``seeds`` are the ``k - 1`` Haar seeds of each nonce
    (``[B, k - 1]``); the result is on ``seeds``' device.
    """
    u = rng.normal(seeds.reshape(-1), k).double()
    u = u / (norm(u) + HAAR_EPS)[:, None]
    return u.view(*seeds.shape, k)


def random_projection(block_hash: str, hidden_size: int, which: str, *, device="cpu") -> torch.Tensor:
    """Return the random projection ``P = 0.01 * N(seed, H*H).view(H, H)`` as float32 ``[H, H]`` on ``device``.

    SPEC §10: ``which`` is ``"pre"`` (applied to the input embeddings) or
    ``"post"`` (to the final hidden state). The matrices come from the counter
    streams, so every device builds the same ones (the original sketch drew
    them with ``torch.Generator``, whose CPU and CUDA streams differ).
    """
    check_str(block_hash, "block_hash")
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    seed = random_projection_seed(block_hash, which)
    p = rng.normal(seed, hidden_size * hidden_size, device=torch.device(device))
    return p.mul_(RANDOM_PROJECTION_SCALE).view(hidden_size, hidden_size)


#: float64 products one step of :func:`project` may hold (64 MiB)
_PROJECT_CHUNK = 1 << 23


def project(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Return ``x + x @ p`` as float32 ``[..., H]``, in float64 with :func:`tree_sum` (a fixed order), rounded once.

    ``x`` is float32 ``[..., H]``, ``p`` float32 ``[H, H]`` on the same device.
    Products of two float32 values are exact in float64 and the sums run in a
    fixed pairwise order of elementwise adds, so each output row is the same on
    every device and in every batch. It is the float64 value rounded once to
    float32: within 1e-6 of it (SPEC §10) wherever float32 can hold that, i.e.
    for results below 16 in magnitude.
    """
    if x.dtype != torch.float32 or p.dtype != torch.float32:
        raise TypeError(f"x and p must be float32, got {x.dtype} and {p.dtype}")
    h = p.shape[0]
    if p.shape != (h, h) or x.shape[-1] != h:
        raise ValueError(f"p must be [H, H] with H = x.shape[-1] = {x.shape[-1]}, got {tuple(p.shape)}")
    rows = x.reshape(-1, h).double()
    pt = p.double().t().contiguous()  # [j, i]: output j sums over i along the last dim
    out = torch.empty(rows.shape, dtype=torch.float32, device=x.device)
    step = max(1, _PROJECT_CHUNK // (h * h))
    for i in range(0, rows.shape[0], step):
        r = rows[i : i + step]
        out[i : i + step] = (r + tree_sum(r[:, None, :] * pt[None])).float()
    return out.view(x.shape)


def pick_indices(block_hash: str, public_key: str, nonces, hidden_size: int, k: int, *, device=None) -> torch.Tensor:
    """Return each nonce's k picked coordinates (SPEC-ARTIFACTS §4-5) as int64 ``[B, k]``, in the canonical order.

    The scores of nonce ``n`` are ``hash(i, seed(f"{block_hash}_{public_key}_nonce_{n}_pick_{k}"))`` for
    ``i < hidden_size``; the picks are the k smallest, ordered by
    :func:`~poc_kernels.rng.smallest_k_canonical` (never by ``torch.topk``, whose order depends on the
    device). Computed on ``device`` (default: the CPU).
    """
    check_str(block_hash, "block_hash")
    check_str(public_key, "public_key")
    nonce_list = check_nonces(nonces)
    hidden_size = check_int(hidden_size, "hidden_size", 1)
    k = check_int(k, "k", 1)
    if k > hidden_size:
        raise ValueError(f"k must lie in [1, hidden_size = {hidden_size}], got {k}")
    seeds = derive_artifact_seeds(block_hash, public_key, nonce_list, k).pick.to(device)
    if not len(nonce_list):
        return torch.empty(0, k, dtype=torch.int64, device=device)
    scores = rng.hash32(
        torch.arange(hidden_size, device=seeds.device).expand(len(nonce_list), hidden_size), seeds[:, None]
    )
    return rng.smallest_k_canonical(scores, k)
