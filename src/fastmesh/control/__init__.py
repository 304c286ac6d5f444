"""fastmesh's control plane (`fastmesh control`) and its client in the proxy (`fastmesh proxy --control-plane`).

One process watches the cluster once and streams each proxy the documents it needs, over HTTP/2 with TLS
(docs/control-plane.md): `views` (what each proxy sees, versioned, as deltas), `protocol` (the messages),
`h2conn` (HTTP/2 on asyncio), `server` (the control plane), `client` (the proxy's side).
"""

DEFAULT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
"""The pod's projected ServiceAccount token, what `fastmesh proxy --control-plane` authenticates with."""
