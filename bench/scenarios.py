"""The scenarios of issue 3: which load generator, how many connections, which path, which config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bench.measure import (
    LoadResult,
    fortio_access_log_latency,
    h2load_log_latency,
    parse_fortio_json,
    parse_h2load,
    parse_wrk,
)
from bench.targets import LARGE_PATH

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
H2LOAD_REQUESTS = 200_000  # PEERS.md: h2load -n 200000 -c 10 -m 10 -t 1


def access_log(log_file: Path) -> Path:
    """Where a fixed-rate fortio run logs each request (next to its -json result)."""
    return log_file.with_name(log_file.name + ".access")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    tool: str  # "wrk" (HTTP/1.1, closed loop), "h2load", or "fortio" (HTTP/1.1 at a fixed rate)
    connections: int
    streams: int = 1  # h2load -m
    h2c: bool = False
    path: str = "/"
    rate: int = 0  # total requests/s, fixed (fortio -qps; h2load --rps per connection); 0 = as fast as possible
    routes: int = 0  # extra routes in every target's config
    default: bool = False  # part of a run without --scenarios
    binary: str = ""  # the load generator's path when not on PATH (fortio: built into a cache)
    # The TLS scenarios (bench/tls.py). `pki`: the targets of its run carry TLS listeners and key
    # material (also the plaintext base scenario, so all run against the same processes); `tls`:
    # the load goes to the TLS listener, the client presenting `client_cert`/`client_key`;
    # `keepalive` False: one connection (and handshake) per request; `h2`: HTTP/2 over TLS (ALPN).
    pki: bool = False
    tls: bool = False
    keepalive: bool = True
    h2: bool = False
    client_cert: str = ""
    client_key: str = ""
    baseline: str = ""  # another scenario: the table adds CPU/req over the same target's there

    def command(self, url: str, duration_s: float, quick: bool, log_file: Path) -> list[str]:
        """The load generator's argv for one run of `duration_s` (h2load -n: a request count)."""
        seconds = max(1, round(duration_s))  # wrk and h2load -D take whole seconds
        if self.tool == "wrk":
            return ["wrk", "-t1", f"-c{self.connections}", f"-d{seconds}s", "--latency",
                    "-s", str(WRK_SCRIPT), url]
        if self.tool == "fortio" and not self.rate:
            return self._fortio_max(url, seconds, log_file)
        if self.tool == "fortio":
            # -uniform: connection i starts i/c of a period late, so requests leave evenly spaced
            # (every 1 ms at 1,000/s), not c at a time. -nocatchup: a connection that falls behind
            # its schedule skips the missed slots instead of sending them back to back (bursts);
            # skipped slots show as req/s below the rate. -r 10 us: the histogram's finest buckets
            # (fortio's default 1 ms would blur sub-millisecond percentiles). The percentiles reported
            # are exact, though: -access-log-file logs every request's latency (1 us resolution), and
            # around a p99 of 0.2-0.5 ms the histogram's buckets are 50 us wide.
            return [self.binary or "fortio", "load", "-qps", str(self.rate), "-c", str(self.connections),
                    "-t", f"{seconds}s", "-uniform", "-nocatchup", "-r", "0.00001", "-p", "50,90,99,99.9",
                    "-loglevel", "Warning", "-json", str(log_file),
                    "-access-log-file", str(access_log(log_file)), url]
        base = ["h2load", "-t", "1", "-c", str(self.connections), "--log-file", str(log_file)]
        if self.rate:
            per_conn = max(1, self.rate // self.connections)
            return [*base, "--h1", "--rps", str(per_conn), "-D", str(seconds), url]
        # A request count, as in PEERS.md; scaled with the duration so warm-ups stay short.
        full = H2LOAD_REQUESTS // 10 if quick else H2LOAD_REQUESTS
        requests = max(1000, int(full * min(1.0, duration_s / (2 if quick else 10))))
        return [*base, "-n", str(requests), "-m", str(self.streams), url]

    def _fortio_max(self, url: str, seconds: int, log_file: Path) -> list[str]:
        """fortio as fast as it goes (-qps 0: closed loop, like wrk), over TLS with a client
        certificate when `tls` (wrk and h2load cannot present one). -k: the server's chain is not
        verified by the client (its cost is on the load generator's CPU, not the proxy's; the
        servers' certificates carry a SPIFFE URI, no name or IP to check)."""
        argv = [self.binary or "fortio", "load", "-qps", "0", "-c", str(self.connections), "-t", f"{seconds}s",
                "-r", "0.00001", "-p", "50,90,99,99.9", "-loglevel", "Warning", "-json", str(log_file)]
        if self.tls:
            if not (self.client_cert and self.client_key):
                raise ValueError(f"scenario {self.name}: no client certificate (with_pki was not applied)")
            argv += ["-cert", self.client_cert, "-key", self.client_key, "-k"]
        if not self.keepalive:
            argv.append("-keepalive=false")
        if self.h2:
            argv.append("-h2")
        return [*argv, url]

    def parse(self, stdout: str, log_file: Path) -> LoadResult:
        if self.tool == "wrk":
            return parse_wrk(stdout)
        if self.tool == "fortio":
            result = parse_fortio_json(log_file.read_text())
            if self.rate and access_log(log_file).exists():
                result.latency_ms = fortio_access_log_latency(access_log(log_file))
            return result
        result = parse_h2load(stdout)
        result.latency_ms = h2load_log_latency(log_file)
        return result


SCENARIOS = [
    Scenario("h1", "HTTP/1.1, wrk -t1 -c50", "wrk", 50, default=True),
    Scenario("h2c", "HTTP/2 cleartext, h2load -c10 -m10", "h2load", 10, streams=10, h2c=True, default=True),
    # Fixed rate, open loop: fortio sends on a schedule. Each connection has 10 ms between its
    # requests (c = rate / 100), so a request waits for a busy connection only after a stall.
    Scenario("rate1k", "HTTP/1.1 fixed rate 1,000 req/s (fortio -qps 1000 -c 10 -uniform -nocatchup)", "fortio", 10,
             rate=1000),
    Scenario("rate10k", "HTTP/1.1 fixed rate 10,000 req/s (fortio -qps 10000 -c 100 -uniform -nocatchup)", "fortio",
             100, rate=10_000),
    Scenario("c1", "HTTP/1.1, 1 connection", "wrk", 1),
    Scenario("c100", "HTTP/1.1, 100 connections", "wrk", 100),
    Scenario("c2000", "HTTP/1.1, 2,000 connections", "wrk", 2000),
    Scenario("large", "HTTP/1.1, 1 MiB response, 10 connections", "wrk", 10, path=LARGE_PATH),
    Scenario("routes10k", "HTTP/1.1, c50, 10,000 extra prefix routes /r<i>; requests to / fall through to the catch-all", "wrk", 50,
             routes=10_000),
    # Issue 5: the CPU mTLS adds. wrk and h2load cannot present a client certificate, so the TLS
    # scenarios and their plaintext bases all run fortio (one client, so the ratios to the bases
    # compare like with like); bench/tls.py sets every target up to do the same TLS work.
    Scenario("tls-plain", "HTTP/1.1 plaintext, fortio -c50 max rate (the base of the TLS ratios)", "fortio", 50,
             pki=True, default=True),
    Scenario("tls", "HTTP/1.1 over mTLS 1.3 (client certificate), keep-alive, fortio -c50", "fortio", 50,
             pki=True, tls=True, baseline="tls-plain", default=True),
    Scenario("tls-new", "HTTP/1.1 over mTLS 1.3, a new connection and full handshake per request, fortio -c10",
             "fortio", 10, pki=True, tls=True, keepalive=False, baseline="tls-plain", default=True),
    Scenario("h2plain", "HTTP/2 cleartext (prior knowledge), fortio -h2 -c10 (the base of h2tls)", "fortio", 10,
             pki=True, h2c=True, h2=True),
    Scenario("h2tls", "HTTP/2 over mTLS 1.3 (ALPN h2), keep-alive, fortio -h2 -c10 (Go's client, one stream "
             "per connection at a time)", "fortio", 10, pki=True, tls=True, h2=True, baseline="h2plain"),
]
BY_NAME = {s.name: s for s in SCENARIOS}

# Without fortio (it could not be built): h2load --rps, whose per-connection timers fire together
# (bursts), and which times a request from when it is sent (coordinated omission).
H2LOAD_RATE = {
    "rate1k": Scenario("rate1k", "HTTP/1.1 fixed rate 1,000 req/s (h2load --h1 --rps, 1 connection: fortio unavailable)",
                       "h2load", 1, rate=1000),
    "rate10k": Scenario("rate10k", "HTTP/1.1 fixed rate 10,000 req/s (h2load --h1 --rps, 10 connections: fortio "
                        "unavailable)", "h2load", 10, rate=10_000),
}


def with_fortio(scenarios: list[Scenario], fortio: Path | None) -> list[Scenario]:
    """The scenarios with fortio's path, or when it is None: h2load for the rate scenarios and
    none of the TLS ones (no other load generator here presents a client certificate)."""
    if fortio is None:
        return [H2LOAD_RATE.get(s.name, s) for s in scenarios if not s.pki]
    return [replace(s, binary=str(fortio)) if s.tool == "fortio" else s for s in scenarios]


def with_pki(scenarios: list[Scenario], client_cert: Path, client_key: Path) -> list[Scenario]:
    """The TLS scenarios with the client's certificate and key."""
    return [replace(s, client_cert=str(client_cert), client_key=str(client_key)) if s.tls else s for s in scenarios]


def select(spec: str | None) -> list[Scenario]:
    """`--scenarios h1,h2c` / `all`; default: the scenarios marked default."""
    if not spec:
        return [s for s in SCENARIOS if s.default]
    if spec == "all":
        return list(SCENARIOS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}, all")
    return [BY_NAME[n] for n in names]
