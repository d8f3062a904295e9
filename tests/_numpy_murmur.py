"""An independent NumPy implementation of SPEC §2-3, used to check the torch streams.

uint32 NumPy arithmetic wraps modulo 2**32, the way the contract is written.
"""

import numpy as np


def rotl32(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def hash32(keys, seed):
    k = np.asarray(keys, dtype=np.uint32)
    with np.errstate(over="ignore"):
        k = k * np.uint32(0xCC9E2D51)
        k = rotl32(k, 15)
        k = k * np.uint32(0x1B873593)
        h = np.uint32(seed) ^ k
        h = rotl32(h, 13)
        h = h * np.uint32(5) + np.uint32(0xE6546B64)
        h ^= h >> np.uint32(16)
        h = h * np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h = h * np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def uniform(seed, n):
    return hash32(np.arange(n, dtype=np.uint32), seed).astype(np.float32) / np.float32(2.0**32)


_M = 2**32


def _unshift(x, s):
    y = x
    for _ in range(32 // s + 1):
        y = x ^ (y >> s)
    return y


def _rotr(x, r):
    return ((x >> r) | (x << (32 - r))) % _M


def _rotl(x, r):
    return ((x << r) | (x >> (32 - r))) % _M


def _unmix(h):
    """Undo everything after ``h = seed ^ k``: return that xor as an int."""
    h = _unshift(h, 16)
    h = h * pow(0xC2B2AE35, -1, _M) % _M
    h = _unshift(h, 13)
    h = h * pow(0x85EBCA6B, -1, _M) % _M
    h = _unshift(h, 16)
    h = (h - 0xE6546B64) * pow(5, -1, _M) % _M
    return _rotr(h, 13)


def key_for_hash(h, seed):
    """Return the key whose hash under ``seed`` is ``h`` (every step of SPEC §2 is a bijection)."""
    k = _unmix(h) ^ seed
    k = k * pow(0x1B873593, -1, _M) % _M
    k = _rotr(k, 15)
    return k * pow(0xCC9E2D51, -1, _M) % _M


def seed_for_hash(h, key):
    """Return the seed under which ``key`` hashes to ``h``."""
    k = key * 0xCC9E2D51 % _M
    k = _rotl(k, 15) * 0x1B873593 % _M
    return _unmix(h) ^ k
