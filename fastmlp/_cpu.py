"""The CPU fastmlp runs on, and the BLAS kernel set it should get — decided before NumPy loads.

The OpenBLAS in NumPy's and SciPy's wheels (0.3.30/0.3.31) picks its Haswell (AVX2) kernels on
AMD's AVX-512 CPUs (Zen 4, Zen 5): sgemm then runs at about half the machine's speed (measured
on a Zen 5: 170-240 GFLOP/s, against ~360 with the SkylakeX kernels). OpenBLAS reads
``OPENBLAS_CORETYPE`` when it loads, so fastmlp sets it — only on such a CPU, only when the user
has not set it, and only if NumPy is not imported yet (then it is too late: ``fastmlp bench``
reports the kernel set actually in use).
"""
import os
import sys

AVX512_FOR_SKYLAKEX = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """(vendor, set of ISA flags) from /proc/cpuinfo; ("", empty set) where there is none."""
    try:
        with open(cpuinfo) as f:
            text = f.read(1 << 20)
    except OSError:
        return "", set()
    vendor, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return vendor, flags


def openblas_coretype(vendor, flags):
    """The OPENBLAS_CORETYPE fastmlp asks for on this CPU, or None to leave OpenBLAS' choice."""
    if vendor == "AuthenticAMD" and all(f in flags for f in AVX512_FOR_SKYLAKEX):
        return "SKYLAKEX"
    return None


def choose_blas_kernels(environ=os.environ, modules=sys.modules, cpuinfo="/proc/cpuinfo"):
    """Set OPENBLAS_CORETYPE for this process when it helps and can still take effect; returns
    the value set, or None."""
    if "OPENBLAS_CORETYPE" in environ or "numpy" in modules \
            or environ.get("FASTMLP_KEEP_BLAS_KERNELS"):
        return None
    coretype = openblas_coretype(*cpu_flags(cpuinfo))
    if coretype:
        environ["OPENBLAS_CORETYPE"] = coretype
    return coretype
