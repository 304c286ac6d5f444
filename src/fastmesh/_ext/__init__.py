"""The compiled Cython modules built from ext/ (`make ext`); may be absent: see fastmesh.config.fastpath."""
