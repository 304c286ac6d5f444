"""fastmesh's built-in certificate authority: a root, an intermediate that signs workload
certificates (X.509-SVIDs with one `spiffe://` URI SAN), root rotation with a two-root bundle.

Everything cryptographic is done by the `cryptography` package. This package is imported only
when an identity is configured (or by `fastmesh ca`): the proxy without mTLS never loads it.
"""

from fastmesh.ca.authority import CA, CAError, Issued

__all__ = ["CA", "CAError", "Issued"]
