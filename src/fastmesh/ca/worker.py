"""The CA's work for a running proxy, in a short-lived child process (`python -m fastmesh.ca.worker`).

`cryptography` (and OpenSSL with it) would stay resident in the proxy for good once imported:
about 15 MiB for work done once every 16 hours. As the config compiler does
(`fastmesh.compiler`), the proxy runs it in a child instead and keeps only what the child prints.

Commands, each answering one JSON line on stdout (exit 0), or `{"error": ...}` (exit 1):
- `issue DIR SPIFFE_ID TTL_S`: a workload certificate from the CA in DIR, and the trust bundle:
  `{"cert_chain_pem", "key_pem", "spiffe_id", "not_before", "not_after", "bundle_pem"}`
  (times in seconds since the epoch). The key goes through the pipe only, never to a file.
- `csr SPIFFE_ID`: a new key and a CSR for it (`{"key_pem", "csr_pem"}`), for a proxy whose
  certificates come from the control plane (`fastmesh proxy --control-plane`).
- `standing DIR` with a certificate chain on stdin: `{"standing", "bundle_pem"}`, the chain's
  standing with the CA as it is now (`CA.standing_of`).
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any


def run(argv: list[str], stdin: str) -> dict[str, Any]:
    from fastmesh.ca import CA
    from fastmesh.ca.authority import make_csr

    command, directory, *rest = argv
    if command == "csr":
        key_pem, csr_pem = make_csr(directory)  # its one argument is the SPIFFE ID
        return {"key_pem": key_pem, "csr_pem": csr_pem}
    ca = CA.load(Path(directory))
    if command == "issue":
        spiffe_id, ttl_s = rest
        issued = ca.issue(spiffe_id, ttl=timedelta(seconds=float(ttl_s)))
        return {
            "cert_chain_pem": issued.cert_chain_pem,
            "key_pem": issued.key_pem,
            "spiffe_id": issued.spiffe_id,
            "not_before": issued.not_before.timestamp(),
            "not_after": issued.not_after.timestamp(),
            "bundle_pem": ca.bundle_pem(),
        }
    if command == "standing":
        return {"standing": ca.standing_of(stdin), "bundle_pem": ca.bundle_pem()}
    raise ValueError(f"unknown command {command!r}")


def main() -> int:
    from fastmesh.ca import CAError

    try:
        answer = run(sys.argv[1:], sys.stdin.read())
    except (CAError, ValueError, OSError) as e:
        print(json.dumps({"error": str(e)}))
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
