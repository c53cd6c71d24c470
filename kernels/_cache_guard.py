"""Tie Numba's cached machine code to the kernel sources it was compiled from.

Numba checks a cached function only against its own file's timestamp, while a jitted function
inlines the kernels it calls from other files: after an edit to dense.py, the cache of
network.train_steps would still hold the old dense code (wrong results, or a crash). So every
cache entry of this package is named and stamped with a hash of all its sources and of the
Numba version (``stamp_entries_with_sources``): a process loads only what was compiled from
the sources it runs, even while another process, started after an edit, compiles and writes the
new code into the same folder. The files of other hashes are dropped when a process finds the
folder's stamp stale (``invalidate_stale_cache``), which keeps the folder small.

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


def sources_digest(here):
    """The hash of the kernel sources in ``here`` and of Numba's version."""
    import numba
    digest = hashlib.sha256(numba.__version__.encode())
    for source in sorted(Path(here).glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def stamp_entries_with_sources(here, digest):
    """From now on, the cache entries of the functions defined in ``here`` carry ``digest`` in
    their file names and in the stamp Numba checks when it loads them (a cache locator put
    before Numba's own, which it wraps). Call it before the kernel modules are imported."""
    from numba.core import caching
    here = os.path.abspath(here)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if impl is None:  # another Numba: the guard's deletions alone
        return
    classes = impl._locator_classes
    if any(getattr(cls, "folder", None) == here for cls in classes):
        return

    class SourcesStampedLocator(caching._CacheLocator):
        folder = here

        def __init__(self, inner):
            self._inner = inner

        def ensure_cache_path(self):
            self._inner.ensure_cache_path()

        def get_cache_path(self):
            return self._inner.get_cache_path()

        def get_source_stamp(self):
            return self._inner.get_source_stamp(), digest

        def get_disambiguator(self):
            return f"{self._inner.get_disambiguator()}-{digest[:12]}"

        def __getattr__(self, name):  # what else Numba reads of a locator (its _py_file...)
            return getattr(self._inner, name)

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != here:
                return None
            for other in classes:
                if other is not cls:
                    inner = other.from_function(py_func, py_file)
                    if inner is not None:
                        return cls(inner)
            return None

    classes.insert(0, SourcesStampedLocator)


def invalidate_stale_cache(here=None):
    """Drop this folder's cache files when they may come from other sources; returns the
    sources' digest."""
    here = Path(os.path.abspath(here or Path(__file__).parent))  # as Numba names the sources
    stamp_text = sources_digest(here)
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
    return stamp_text
