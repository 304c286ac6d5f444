"""Build hook for the Cython modules in ext/ (see ext/README.md).

The package itself (and the Rust engine) is built by maturin through pyproject.toml; this script
builds only ext/*.pyx, each into `fastmesh._ext.<name>` beside the sources (src/fastmesh/_ext/),
where the editable install `maturin develop` made finds it:

    python setup.py build_ext --inplace      # `make ext` (part of `make engine`) runs this

Cython and setuptools come from the `ext` extra of pyproject.toml (pinned there). Without the
built modules fastmesh runs the pure-Python path (fastmesh.config.fastpath).
"""
from pathlib import Path

from setuptools import Extension, setup

ext_modules = []
pyx = sorted(Path("ext").glob("*.pyx"))
if pyx:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension(f"fastmesh._ext.{p.stem}", [str(p)]) for p in pyx],
        include_path=["ext"],
        compiler_directives={"language_level": 3},
        quiet=True,
    )

if __name__ == "__main__":
    setup(name="fastmesh-ext", package_dir={"": "src"}, ext_modules=ext_modules)
