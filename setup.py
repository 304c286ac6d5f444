"""Build hook for the optional Cython modules in ext/.

The package itself (and the Rust engine) is built by maturin through pyproject.toml.
ext/ holds Cython only for Python-side code a benchmark in bench/ shows is hot; it is empty
until then (see ext/README.md), so this script builds nothing yet:

    python setup.py build_ext --inplace
"""
from pathlib import Path

from setuptools import setup

ext_modules = []
pyx = sorted(Path("ext").glob("*.pyx"))
if pyx:  # pragma: no cover - no Cython module has earned its place yet
    from Cython.Build import cythonize

    ext_modules = cythonize([str(p) for p in pyx], language_level=3)

if __name__ == "__main__":
    setup(name="fastmesh-ext", ext_modules=ext_modules)
