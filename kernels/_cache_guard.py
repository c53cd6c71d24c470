"""Drop Numba's cached machine code when any kernel source changed.

Numba checks a cached function only against its own file's timestamp, while a jitted function
inlines the kernels it calls from other files: after an edit to dense.py, the cache of
mlp.train_steps would still hold the old dense code (wrong results, or a crash). So the cache
files of this package are tied to a hash of all its sources and of the Numba version.
"""
import hashlib
import os
from pathlib import Path


def _cache_dirs(here):
    dirs = [here / "__pycache__"]
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom:
        # Numba mirrors the source folder's absolute path below NUMBA_CACHE_DIR
        dirs.append(Path(custom) / str(here.resolve()).lstrip(os.sep))
    return dirs


def invalidate_stale_cache(here=None):
    import numba
    here = Path(here or Path(__file__).parent).resolve()
    digest = hashlib.sha256(numba.__version__.encode())
    for source in sorted(here.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    stamp_text = digest.hexdigest()
    for cache in _cache_dirs(here):
        stamp = cache / "fastmlp-kernels.stamp"
        try:
            if stamp.read_text() == stamp_text:
                continue
        except OSError:
            pass
        if not cache.is_dir():
            continue
        try:
            for pattern in ("*.nbi", "*.nbc"):
                for f in cache.glob(pattern):
                    f.unlink()
            stamp.write_text(stamp_text)
        except OSError:  # a read-only install: Numba falls back to its own cache folder
            pass
