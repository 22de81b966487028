"""GPU paths: CUDA devices and CuPy-backed chunks (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import xeofm

from .conftest import make_cube

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_matches_cpu(tiny_spec):
    cube = make_cube(97, 131, nt=2)
    cpu = cube.eofm.embed(tiny_spec, device="cpu").values
    gpu = cube.eofm.embed(tiny_spec, device="cuda").values
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-4)


@needs_cuda
def test_cuda_bf16_close_to_fp32(tiny_spec):
    cube = make_cube(64, 64)
    a = cube.eofm.embed(tiny_spec, device="cuda").values
    b = cube.eofm.embed(tiny_spec, device="cuda", amp="bf16").values
    assert np.nanmax(np.abs(a - b)) < 0.05 * np.nanmax(np.abs(a)) + 1e-3


@needs_cuda
def test_cupy_chunks_stay_on_gpu_without_host_copies(tiny_spec):
    cp = pytest.importorskip("cupy")
    cube = make_cube(96, 128, nt=2).astype("float32")
    ref = cube.eofm.embed(tiny_spec, device="cuda").values
    gcube = cube.copy(data=cube.chunk({"x": 64}).data.map_blocks(cp.asarray))
    emb = gcube.eofm.embed(tiny_spec, device="cuda")
    assert type(emb.data._meta).__module__.startswith("cupy")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        out = emb.data.compute()
        torch.cuda.synchronize()
    assert isinstance(out, cp.ndarray)
    # the only device-to-host copy per block is its small per-cell validity table; an image
    # or output round trip through the host would add more copies per block
    d2h = [e for e in prof.events() if "Memcpy DtoH" in e.name or "Device -> Pageable" in e.name]
    assert len(d2h) <= emb.data.npartitions, [e.name for e in d2h]
    np.testing.assert_allclose(cp.asnumpy(out), ref, rtol=1e-4, atol=1e-4)
