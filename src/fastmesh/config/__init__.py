"""The config layer: Kubernetes-form YAML in, a checked `MeshConfig`, then the engine snapshot out.

    cfg = load_file("examples/demo.yaml")     # ConfigError lists every problem, one per line
    snapshot = compile_snapshot(cfg)          # JSON-ready; the runtime adds "version"
"""

from fastmesh.config.snapshot import compile_snapshot
from fastmesh.config.errors import ConfigError, Problem
from fastmesh.config.loader import load_file, load_text
from fastmesh.config.mesh import MeshConfig, document_count

__all__ = ["ConfigError", "MeshConfig", "Problem", "compile_snapshot", "document_count", "load_file", "load_text"]
