"""What `make demo` checks, with real requests: the split, the caller identity the apps saw, the
pin, plaintext refused on STRICT ports, and the AuthorizationPolicy refusing another identity.

Each check prints what it saw and returns True when it is what the demo promises.
"""

from __future__ import annotations

import http.client
import ssl
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from fastmesh.demo_service import answer_line
from fastmesh.http1 import split_hostport

HOST = "reviews"  # the Service the demo's HTTPRoute is attached to
MAJOR, MINOR = "reviews-v1", "reviews-v2"
PIN = ("x-version", "v2")
SPLIT_RANGE = (85.0, 95.0)  # percent of requests MAJOR must get
TIMEOUT_S = 10.0


def get(conn: http.client.HTTPConnection, headers: dict[str, str]) -> str:
    conn.request("GET", "/", headers={"Host": HOST, **headers})
    response = conn.getresponse()
    body = response.read().decode(errors="replace").strip()
    return body if response.status == 200 else f"HTTP {response.status} {body}".strip()


def observe(listener: str, count: int, headers: dict[str, str]) -> Counter[str]:
    """`count` requests on one keep-alive connection; how many times each answer came."""
    host, port = split_hostport(listener)
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        return Counter(get(conn, headers) for _ in range(count))
    finally:
        conn.close()


def _print_counts(answers: Counter[str]) -> None:
    for answer, n in answers.most_common():
        print(f"  {n:5d}  {answer}")


def check_split(listener: str, requests: int, caller: str) -> bool:
    """The split is within SPLIT_RANGE and every answer names `caller` (what the app received)."""
    answers = observe(listener, requests, {})
    print(f"==> {requests} requests to Host: {HOST} through {listener}")
    _print_counts(answers)
    major = answer_line(MAJOR, None).split(",")[0] + ","  # "hello from reviews-v1,": any caller
    share = 100.0 * sum(n for answer, n in answers.items() if answer.startswith(major)) / requests
    split_ok = SPLIT_RANGE[0] <= share <= SPLIT_RANGE[1]
    print(f"  {MAJOR} got {share:.1f} % ({'ok' if split_ok else 'NOT'} within "
          f"{SPLIT_RANGE[0]:.0f}..{SPLIT_RANGE[1]:.0f} %)")
    expected = {answer_line(name, f"URI={caller}") for name in (MAJOR, MINOR)}
    identity_ok = set(answers) <= expected
    print(f"  the apps saw the caller {caller}: {'ok' if identity_ok else 'NOT in every answer'}")
    return split_ok and identity_ok


def check_pin(listener: str, caller: str) -> bool:
    pinned = observe(listener, 100, {PIN[0]: PIN[1]})
    print(f"==> 100 requests with {PIN[0]}: {PIN[1]}")
    _print_counts(pinned)
    ok = pinned == Counter({answer_line(MINOR, f"URI={caller}"): 100})
    print(f"  pin to {MINOR}: {'ok' if ok else 'FAILED'}")
    return ok


def plaintext_answer(address: str) -> str | None:
    """What a plaintext HTTP/1.1 request to `address` gets: None when the connection is closed
    without an HTTP answer (what a STRICT listener does), else the status line or the error."""
    host, port = split_hostport(address)
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        response = conn.getresponse()
        return f"HTTP {response.status}"
    except TimeoutError:
        return f"no answer in {TIMEOUT_S:.0f} s (expected the connection to be closed)"
    except ConnectionRefusedError:
        return "connection refused: nothing listens there"
    except (http.client.HTTPException, ConnectionError):
        return None
    finally:
        conn.close()


def check_plaintext_refused(strict: Sequence[str]) -> bool:
    print("==> plaintext HTTP to the STRICT (mTLS only) ports")
    ok = True
    for address in strict:
        got = plaintext_answer(address)
        print(f"  {address}: " + ("closed without an answer: ok" if got is None else f"NOT refused: {got}"))
        ok = ok and got is None
    return ok


def mtls_get(address: str, cert_chain: Path, key: Path, bundle: Path) -> tuple[int, str]:
    """A GET over mTLS with the given client certificate, the server checked against `bundle`
    (its SPIFFE ID is not checked: it has no DNS name). (status, body)."""
    context = ssl.create_default_context(cafile=str(bundle))
    context.check_hostname = False
    context.load_cert_chain(str(cert_chain), str(key))
    host, port = split_hostport(address)
    conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT_S, context=context)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    finally:
        conn.close()


def check_authorization(address: str, other: str, cert_chain: Path, key: Path, bundle: Path) -> bool:
    """A caller with a valid certificate of another identity gets 403 from the policy."""
    print(f"==> mTLS to {address} as {other} (a valid certificate of the same CA)")
    try:
        status, body = mtls_get(address, cert_chain, key, bundle)
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        print(f"  NOT refused by the policy: the request failed ({e})")
        return False
    ok = status == 403 and "RBAC: access denied" in body
    print(f"  HTTP {status} {body}: {'ok' if ok else 'NOT'} (the AuthorizationPolicy lets only productpage in)")
    return ok
