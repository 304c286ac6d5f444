"""fastmesh benchmarks: the upstream directly, nginx, HAProxy and fastmesh side by side (`make bench`)."""
