"""The side-by-side comparison: fastmlp (Numba and NumPy), PyTorch and JAX when installed, and
the machine's sgemm floor, in one run. Same as ``fastmlp bench``.

    python bench/compare.py --batch-sizes 10,256 --json results.json
"""
import argparse
import sys

import fastmlp  # noqa: F401  (first: it sets OpenBLAS up before NumPy loads)
from harness import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
