"""Bad input gets a clear error naming the argument."""

import numpy as np
import pytest
import torch

import poc_kernels

BACKENDS = ["auto"] + [b for b in ("reference", "cpp") if b in poc_kernels.available_backends("cpu")]
X = torch.randn(2, 16)


def _cd(**kw):
    # a call taking the backend to use unless the case names its own
    def call(default_backend):
        args = dict(last_hidden=X, block_hash="blk", public_key="key", nonces=[1, 2])
        args.update(kw)
        backend = args.pop("backend", default_backend)
        return poc_kernels.compute_distances(
            args.pop("last_hidden"),
            args.pop("block_hash"),
            args.pop("public_key"),
            args.pop("nonces"),
            backend=backend,
            **args,
        )

    return call


DISTANCE_CASES = [
    ("rank 1", _cd(last_hidden=torch.randn(16)), ValueError, r"last_hidden must be 2-D"),
    ("rank 3", _cd(last_hidden=torch.randn(2, 3, 16)), ValueError, r"last_hidden must be 2-D .* \(2, 3, 16\)"),
    ("zero hidden", _cd(last_hidden=torch.randn(2, 0)), ValueError, "last_hidden"),
    ("not a tensor", _cd(last_hidden=[[1.0, 2.0]]), TypeError, "last_hidden must be a torch.Tensor"),
    (
        "integer hidden",
        _cd(last_hidden=torch.ones(2, 16, dtype=torch.int32)),
        TypeError,
        "last_hidden must have a floating dtype",
    ),
    ("bool hidden", _cd(last_hidden=torch.ones(2, 16, dtype=torch.bool)), TypeError, "last_hidden"),
    ("too few nonces", _cd(nonces=[1]), ValueError, r"len\(nonces\) = 1 does not match last_hidden batch size 2"),
    ("too many nonces", _cd(nonces=[1, 2, 3]), ValueError, r"len\(nonces\) = 3"),
    ("negative nonce", _cd(nonces=[1, -1]), ValueError, r"nonces\[1\] = -1 is outside \[0, 2\*\*32\)"),
    ("huge nonce", _cd(nonces=[2**32, 1]), ValueError, r"nonces\[0\] = 4294967296"),
    ("tensor nonce out of range", _cd(nonces=torch.tensor([1, 2**32])), ValueError, "nonces must lie in"),
    ("negative tensor nonce", _cd(nonces=torch.tensor([-5, 1])), ValueError, "nonces must lie in .* -5"),
    ("float nonce", _cd(nonces=[1, 2.0]), TypeError, r"nonces\[1\] must be an int"),
    ("bool nonce", _cd(nonces=[True, 2]), TypeError, r"nonces\[0\]"),
    (
        "float tensor nonces",
        _cd(nonces=torch.tensor([1.0, 2.0])),
        TypeError,
        "nonces must be ints or an integer tensor",
    ),
    ("2-D tensor nonces", _cd(nonces=torch.tensor([[1, 2]])), ValueError, "nonces must be a 1-D"),
    ("float array nonces", _cd(nonces=np.array([1.0, 2.0])), TypeError, "nonces must be ints or an integer array"),
    ("2-D array nonces", _cd(nonces=np.array([[1, 2]])), ValueError, "nonces must be a 1-D integer array"),
    ("array nonce out of range", _cd(nonces=np.array([1, 2**32], dtype=np.uint64)), ValueError, "4294967296"),
    ("string nonces", _cd(nonces="12"), TypeError, "nonces"),
    ("scalar nonces", _cd(nonces=5), TypeError, "nonces"),
    ("bytes block_hash", _cd(block_hash=b"blk"), TypeError, "block_hash must be a str"),
    ("int block_hash", _cd(block_hash=5), TypeError, "block_hash must be a str"),
    ("None public_key", _cd(public_key=None), TypeError, "public_key must be a str"),
    ("sign_flips not bool", _cd(sign_flips=1), TypeError, "sign_flips must be a bool"),
    ("output_dim zero", _cd(output_dim=0), ValueError, "output_dim"),
    ("output_dim float", _cd(output_dim=8192.0), TypeError, "output_dim"),
    ("negative reflections", _cd(num_reflections=-1), ValueError, "num_reflections"),
    ("unknown backend", _cd(backend="cuda"), ValueError, "backend must be one of"),
    ("backend not str", _cd(backend=None), TypeError, "backend must be a str"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, call, exc, match", DISTANCE_CASES, ids=[c[0] for c in DISTANCE_CASES])
def test_compute_distances_bad_input(name, call, exc, match, backend):
    with pytest.raises(exc, match=match):
        call(backend)


def test_unavailable_backend_is_named():
    for name in poc_kernels.BACKENDS:
        if name not in poc_kernels.available_backends():
            with pytest.raises(ValueError, match=f"backend='{name}' is not available"):
                poc_kernels.compute_distances(X, "blk", "key", [1, 2], backend=name)


def _gi(**kw):
    def call(default_backend):
        args = dict(block_hash="blk", public_key="key", nonces=[1, 2], seq_len=3, hidden_size=8)
        args.update(kw)
        args.setdefault("backend", default_backend)
        pos = [args.pop(k) for k in ("block_hash", "public_key", "nonces", "seq_len", "hidden_size")]
        return poc_kernels.generate_inputs(*pos, **args)

    return call


INPUT_CASES = [
    ("block_hash", _gi(block_hash=1), TypeError, "block_hash must be a str"),
    ("public_key", _gi(public_key=b"k"), TypeError, "public_key must be a str"),
    ("nonce range", _gi(nonces=[2**32]), ValueError, r"nonces\[0\]"),
    ("seq_len zero", _gi(seq_len=0), ValueError, "seq_len must be an int >= 1"),
    ("seq_len float", _gi(seq_len=2.0), TypeError, "seq_len"),
    ("hidden negative", _gi(hidden_size=-4), ValueError, "hidden_size"),
    ("dtype int", _gi(dtype=torch.int32), TypeError, "dtype must be a floating torch.dtype"),
    ("dtype numpy", _gi(dtype=np.float32), TypeError, "dtype"),
    ("device bogus", _gi(device="nonsense"), ValueError, "device"),
    ("out shape", _gi(out=torch.empty(2, 3, 9, dtype=torch.float16)), ValueError, r"out must have shape \(2, 3, 8\)"),
    ("out dtype", _gi(out=torch.empty(2, 3, 8)), ValueError, "out has dtype torch.float32 but dtype=torch.float16"),
    ("out type", _gi(out=np.zeros((2, 3, 8))), TypeError, "out must be a torch.Tensor"),
    ("out device", _gi(out=torch.empty(2, 3, 8, dtype=torch.float16, device="meta")), ValueError, "out is on meta"),
    ("backend", _gi(backend="gpu"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, call, exc, match", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_generate_inputs_bad_input(name, call, exc, match, backend):
    with pytest.raises(exc, match=match):
        call(backend)
