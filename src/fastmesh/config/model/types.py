"""Scalar field types of the config kinds: each checks one value and says how it reads in the docs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class Doc:
    """How a constrained type reads in the field tables of docs/config.md."""

    text: str


def fail(message: str) -> NoReturn:
    """Reject a value; `message` becomes the problem text verbatim."""
    raise PydanticCustomError("fastmesh", "{message}", {"message": message})


def _int_range(lo: int, hi: int) -> AfterValidator:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            fail(f"must be between {lo} and {hi} (got {value})")
        return value

    return AfterValidator(check)


def schema(**constraints: Any) -> FieldInfo:
    """OpenAPI constraints of a type, for the CRDs (deploy/crds/): validation stays with the AfterValidator."""
    return Field(json_schema_extra=constraints)


def _bounded(lo: int, hi: int) -> tuple[AfterValidator, FieldInfo]:
    return _int_range(lo, hi), schema(minimum=lo, maximum=hi)


def _percent(value: float) -> float:
    if not 0 <= value <= 100:
        fail(f"must be between 0 and 100 (got {value})")
    return value


def _checked(check: Callable[[str], None]) -> AfterValidator:
    def run(value: str) -> str:
        check(value)
        return value

    return AfterValidator(run)


# === numbers ===

Port = Annotated[int, *_bounded(1, 65535), Doc("port 1..65535")]
ListenPort = Annotated[int, *_bounded(0, 65535), Doc("port 0..65535 (0: any free port)")]
Weight = Annotated[int, *_bounded(0, 1_000_000), Doc("integer 0..1000000")]
WorkerThreads = Annotated[int, *_bounded(1, 256), Doc("integer 1..256")]
IdleCap = Annotated[int, *_bounded(0, 100_000), Doc("integer 0..100000")]
RetryAttempts = Annotated[int, *_bounded(0, 20), Doc("integer 0..20")]
RetryStatus = Annotated[int, *_bounded(400, 599), Doc("HTTP status 400..599")]
Percent = Annotated[float, AfterValidator(_percent), schema(minimum=0, maximum=100), Doc("number 0..100")]
ByteCount = Annotated[int, *_bounded(0, 1 << 30), Doc("bytes 0..1073741824")]


def _redirect_status(value: int) -> int:
    if value not in (301, 302, 303, 307, 308):
        fail(f"must be one of 301, 302, 303, 307, 308 (got {value})")
    return value


RedirectStatus = Annotated[int, AfterValidator(_redirect_status), schema(enum=[301, 302, 303, 307, 308]), Doc("301 | 302 | 303 | 307 | 308")]


def _int_or_string(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        fail(f"must be a port number or a port name (got {value!r})")
    return value


IntOrString = Annotated[int | str, BeforeValidator(_int_or_string), schema(**{"x-kubernetes-int-or-string": True}), Doc("integer or string")]

# === names ===

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(rf"^{_LABEL}$")
_DNS_SUBDOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_DNS_1035 = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?$")
_HOSTNAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")
# RFC 7230 token, as Gateway API's HTTPHeaderName.
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")


def _dns_label(value: str) -> None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        fail(f"must be a DNS label: at most 63 lower-case letters, digits and '-' (got {value!r})")


def dns_1035_problem(value: str) -> str | None:
    """Why `value` cannot be a Service name (which becomes a host name), or None."""
    if len(value) > 63 or not _DNS_1035.match(value):
        return (
            "a Service name must be a DNS-1035 label: at most 63 lower-case letters, digits and '-',"
            f" starting with a letter (got {value!r})"
        )
    return None


def _object_name(value: str) -> None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        fail(f"must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.' (got {value!r})")


def hostname_problem(value: str, wildcard: bool) -> str | None:
    """Why `value` is not a Gateway API hostname, or None."""
    if value == "*":
        return "'*' is not a hostname: leave `hostnames` empty to match every host"
    if ":" in value and not _is_ip(value):
        return f"must not include a port (got {value!r})"
    if _is_ip(value):
        return f"must be a DNS name, not an IP address (got {value!r})"
    if value != value.lower():
        return f"must be lower-case (got {value!r})"
    if value.startswith("*") and not wildcard:
        return f"wildcards are not allowed here (got {value!r})"
    if len(value) > 253 or not _HOSTNAME.match(value) or any(len(p) > 63 for p in value.split(".")):
        return (
            f"{value!r} is not a valid hostname: DNS labels of lower-case letters, digits and '-'"
            " separated by '.', optionally starting with '*.'"
        )
    return None


def _hostname(value: str) -> None:
    if problem := hostname_problem(value, wildcard=True):
        fail(problem)


def _precise_hostname(value: str) -> None:
    if problem := hostname_problem(value, wildcard=False):
        fail(problem)


def _header_name(value: str) -> None:
    if len(value) > 256 or not _TOKEN.match(value):
        fail(f"{value!r} is not a valid header name (RFC 7230 token: letters, digits and !#$%&'*+-.^_`|~)")


def _header_value(value: str) -> None:
    if len(value) > 4096:
        fail(f"must be at most 4096 characters (got {len(value)})")
    if any(c in value for c in "\r\n\0"):
        fail(f"must not contain CR, LF or NUL (got {value!r})")


DNSLabel = Annotated[str, _checked(_dns_label), schema(maxLength=63, pattern=_DNS_LABEL.pattern), Doc("DNS label")]
ObjectName = Annotated[str, _checked(_object_name), schema(maxLength=253, pattern=_DNS_SUBDOMAIN.pattern), Doc("DNS-1123 subdomain")]
Hostname = Annotated[str, _checked(_hostname), schema(maxLength=253, pattern=_HOSTNAME.pattern), Doc("hostname, may start with `*.`")]
PreciseHostname = Annotated[str, _checked(_precise_hostname), schema(maxLength=253, pattern=_DNS_SUBDOMAIN.pattern), Doc("hostname")]
HeaderName = Annotated[str, _checked(_header_name), schema(maxLength=256, pattern=_TOKEN.pattern), Doc("header name")]
HeaderValue = Annotated[str, _checked(_header_value), schema(maxLength=4096), Doc("string (max 4096)")]

# === addresses ===


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def split_hostport(value: str) -> tuple[str, int]:
    """`"127.0.0.1:80"` / `"[::1]:80"` / `"example.com:80"` -> (host, port); ValueError if malformed."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep or not _is_ip(host) or ":" not in host:
            raise ValueError("an IPv6 address is written [addr]:port")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if ":" in host:
            raise ValueError("an IPv6 address is written [addr]:port")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number 0..65535")
    return host, int(port)


def join_hostport(host: str, port: int) -> str:
    """(host, port) -> `host:port`, bracketing IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip_address(value: str) -> None:
    if not _is_ip(value):
        fail(f"must be an IP address such as 127.0.0.1, 0.0.0.0 or ::1 (got {value!r})")


def _socket_address(value: str) -> None:
    try:
        host, _ = split_hostport(value)
    except ValueError as e:
        fail(f"must be ip:port such as 127.0.0.1:15000 ({e}; got {value!r})")
    if not _is_ip(host):
        fail(f"must be ip:port with an IP address, not a host name (got {value!r})")


def _endpoint(value: str) -> None:
    try:
        host, port = split_hostport(value)
    except ValueError as e:
        fail(f"must be host:port such as 10.0.0.7:8080 or api.example.com:80 ({e}; got {value!r})")
    if port == 0:
        fail(f"the port must be between 1 and 65535 (got {value!r})")
    if not _is_ip(host) and hostname_problem(host.lower(), wildcard=False):
        fail(f"{host!r} is neither an IP address nor a DNS name (got {value!r})")


IPAddress = Annotated[str, _checked(_ip_address), Doc("IP address")]
SocketAddress = Annotated[str, _checked(_socket_address), Doc("ip:port")]
Endpoint = Annotated[str, _checked(_endpoint), Doc("host:port")]

# === durations (Gateway API GEP-2257) ===

_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str) -> float:
    """`"1m30s"` -> 90.0 seconds; ValueError if `value` is not a Gateway API duration."""
    if not _DURATION.match(value):
        raise ValueError(value)
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def _duration(value: str) -> None:
    try:
        parse_duration(value)
    except ValueError:
        fail(f"must be a duration such as 10s, 500ms or 1h30m (got {value!r})")


Duration = Annotated[str, _checked(_duration), schema(pattern=_DURATION.pattern), Doc("duration (`10s`, `500ms`, `1h30m`)")]

HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


def _unsupported(value: Any) -> Any:
    fail("is a Gateway API field fastmesh does not support yet; remove it")


Unsupported = Annotated[Any, AfterValidator(_unsupported), Doc("not supported")]
