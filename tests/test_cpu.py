"""The BLAS kernel choice made before NumPy loads (fastmlp/_cpu.py), on made-up cpuinfo files."""
import pytest

from fastmlp._cpu import choose_blas_kernels, cpu_flags, openblas_coretype

ZEN5 = "avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16"
ZEN3 = "avx avx2 fma sse4_2"


def cpuinfo(tmp_path, vendor, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n")
    return str(path)


@pytest.mark.parametrize("vendor, flags, expected", [
    ("AuthenticAMD", ZEN5, "SKYLAKEX"),   # Zen 4/5: OpenBLAS would take its Haswell kernels
    ("AuthenticAMD", ZEN3, None),         # no AVX-512: nothing better to ask for
    ("GenuineIntel", ZEN5, None),         # OpenBLAS already picks AVX-512 kernels on Intel
    ("AuthenticAMD", "avx2 avx512f", None),  # an incomplete AVX-512
])
def test_coretype_only_for_amd_avx512(tmp_path, vendor, flags, expected):
    path = cpuinfo(tmp_path, vendor, flags)
    assert openblas_coretype(*cpu_flags(path)) == expected
    env = {}
    assert choose_blas_kernels(env, modules={}, cpuinfo=path) == expected
    assert env.get("OPENBLAS_CORETYPE") == expected


def test_never_overrides_the_user_or_acts_too_late(tmp_path):
    path = cpuinfo(tmp_path, "AuthenticAMD", ZEN5)
    env = {"OPENBLAS_CORETYPE": "HASWELL"}
    assert choose_blas_kernels(env, modules={}, cpuinfo=path) is None
    assert env == {"OPENBLAS_CORETYPE": "HASWELL"}
    env = {}
    assert choose_blas_kernels(env, modules={"numpy": object()}, cpuinfo=path) is None
    assert choose_blas_kernels({"FASTMLP_KEEP_BLAS_KERNELS": "1"}, {}, path) is None
    assert env == {} and cpu_flags(str(tmp_path / "missing")) == ("", set())
