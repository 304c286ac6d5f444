"""fastmesh: a service mesh whose data plane is a compiled Rust engine driven by a thin Python orchestrator."""

__version__ = "0.1.0"
