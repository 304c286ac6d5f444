"""Reading the mesh from a Kubernetes API server (`fastmesh proxy --kubernetes`)."""


class KubeError(RuntimeError):
    """The API server could not be read (connection, TLS, authentication, authorization)."""
