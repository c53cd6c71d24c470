"""Drop Numba's cached machine code when any kernel source changed.

Numba checks a cached function only against its own file's timestamp, while a jitted function
inlines the kernels it calls from other files: after an edit to dense.py, the cache of
mlp.train_steps would still hold the old dense code (wrong results, or a crash). So the cache
files of this package are tied to a hash of all its sources and of the Numba version.

Other processes may be loading or writing the same cache meanwhile. Numba writes each cache file
to a temporary name and renames it; a file deleted here stays readable by a process that has it
open, and an index whose data file is gone makes Numba compile again. What must hold on this
side: a file another process deleted first is no error, and the stamp is never seen half written
(it is renamed into place too).
"""
import hashlib
import os
from pathlib import Path


def _cache_dirs(here):
    """Where Numba may keep this folder's cache, as its own locators name them, the one it
    writes to first: below $NUMBA_CACHE_DIR if set, beside the sources, in the user-wide cache
    (read-only installs)."""
    from numba.core import caching
    from numba.misc.appdirs import AppDirs
    dirs = []
    source = os.path.join(os.path.abspath(here), "network.py")
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom:
        dirs.append(Path(custom) / caching.UserProvidedCacheLocator.get_suitable_cache_subpath(
            source))
    dirs.append(here / "__pycache__")
    user_wide = AppDirs(appname="numba", appauthor=False).user_cache_dir
    dirs.append(Path(user_wide) / caching.UserWideCacheLocator.get_suitable_cache_subpath(source))
    return dirs


def invalidate_stale_cache(here=None):
    import numba
    here = Path(os.path.abspath(here or Path(__file__).parent))  # as Numba names the sources
    digest = hashlib.sha256(numba.__version__.encode())
    for source in sorted(here.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    stamp_text = digest.hexdigest()
    placed = False  # the stamp is in the folder Numba writes to
    for cache in _cache_dirs(here):
        stamp = cache / "fastmlp-kernels.stamp"
        try:
            if stamp.read_text() == stamp_text:
                placed = True
                continue
        except OSError:
            pass
        try:
            if not cache.is_dir():
                if placed:
                    continue
                # stamped before Numba writes there: an unstamped cache is of unknown sources
                cache.mkdir(parents=True, exist_ok=True)
            for pattern in ("*.nbi", "*.nbc"):
                for f in cache.glob(pattern):
                    f.unlink(missing_ok=True)
            partial = cache / f".fastmlp-kernels.stamp.{os.getpid()}"
            partial.write_text(stamp_text)
            os.replace(partial, stamp)
            placed = True
        except OSError:  # a read-only install: Numba falls back to the next folder
            pass
