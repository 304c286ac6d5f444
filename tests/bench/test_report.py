"""Parsers of the benchmark harness (bench/) on output captured from the real tools, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.measure import (
    CpuTicks,
    cpu_ticks,
    fortio_access_log_latency,
    h2load_log_latency,
    parse_fortio_json,
    parse_h2load,
    parse_perf_syscalls,
    parse_proc_stat,
    parse_strace_summary,
    parse_status_kb,
    parse_wrk,
    percentile,
)
from bench.report import Sample, SyscallSample, build, markdown, split_by_scale
from bench.scenarios import BY_NAME, access_log, select, with_fortio, with_pki

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


# === wrk ===


def test_wrk_report_with_the_percentile_script():
    r = parse_wrk(sample("wrk.txt"))
    assert (r.requests, r.duration_s, r.rps, r.errors) == (46732, 1.0, 46711.21, 0)
    # The BENCH line of bench/wrk_report.lua (exact microseconds) wins over the rounded table.
    assert r.latency_ms == pytest.approx({"p50": 0.117, "p75": 0.18, "p90": 1.111, "p99": 3.737, "p999": 4.811})


def test_wrk_report_without_the_script_uses_the_latency_distribution():
    text = "\n".join(line for line in sample("wrk.txt").splitlines() if not line.startswith("BENCH "))
    r = parse_wrk(text)
    assert r.latency_ms == pytest.approx({"p50": 0.117, "p75": 0.18, "p90": 1.11, "p99": 3.74})


def test_wrk_socket_errors_and_bad_statuses_are_errors():
    text = sample("wrk.txt").replace(
        "Requests/sec:", "  Socket errors: connect 1, read 2, write 0, timeout 3\n"
                         "  Non-2xx or 3xx responses: 4\nRequests/sec:")
    assert parse_wrk(text).errors == 10


def test_wrk_run_without_latency_flag_and_seconds_latency():
    r = parse_wrk(sample("perf-wrk.txt"))
    assert (r.requests, r.duration_s, r.rps, r.latency_ms) == (21300, 1.1, 19346.26, {})
    text = sample("wrk.txt").replace("99%    3.74ms", "99%    1.50s")
    assert parse_wrk(text.replace("BENCH", "XBENCH")).latency_ms["p99"] == pytest.approx(1500.0)


def test_wrk_usage_text_is_not_a_report():
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("Usage: wrk <options> <url>\n  Options:\n    -c, --connections <N>\n")


# === h2load ===


def test_h2load_summary():
    r = parse_h2load(sample("h2load.txt"))
    assert (r.requests, r.rps, r.errors) == (2000, 47819.43, 0)
    assert r.duration_s == pytest.approx(0.04182)


def test_h2load_failed_requests_are_errors():
    text = sample("h2load.txt").replace(
        "2000 done, 2000 succeeded, 0 failed, 0 errored", "1990 done, 1970 succeeded, 20 failed, 12 errored")
    r = parse_h2load(text)
    assert (r.requests, r.errors) == (1990, 20)


def test_h2load_garbage_is_rejected():
    with pytest.raises(ValueError, match="not an h2load report"):
        parse_h2load("starting benchmark...\nconnect() failed\n")


def test_h2load_log_file_percentiles():
    durations_ms = sorted(int(line.split("\t")[2]) / 1e3 for line in sample("h2load-requests.log").splitlines())
    assert len(durations_ms) == 20
    lat = h2load_log_latency(SAMPLES / "h2load-requests.log")
    # nearest rank over 20 values: p50 is the 10th, p90 the 18th, p99 and p99.9 the 20th
    assert lat == {"p50": durations_ms[9], "p90": durations_ms[17], "p99": durations_ms[19], "p999": durations_ms[19]}


# === fortio ===


def test_fortio_json_requests_rate_and_percentiles():
    # fortio 1.68.2 load -qps 1000 -c 10 -t 2s -uniform -nocatchup -r 0.00001 -p 50,99,99.9 against nginx
    r = parse_fortio_json(sample("fortio.json"))
    assert (r.requests, r.errors) == (2000, 0)
    assert r.duration_s == pytest.approx(2.00925756)
    assert r.rps == pytest.approx(2000 / 2.00925756)
    assert r.latency_ms == pytest.approx({"p50": 0.1277922077922078, "p99": 0.85, "p999": 5.0})


def test_fortio_non_200_answers_and_socket_errors_are_errors():
    doc = json.loads(sample("fortio.json"))
    doc["RetCodes"] = {"200": 1990, "503": 6, "-1": 4}
    assert parse_fortio_json(json.dumps(doc)).errors == 10


def test_fixed_rate_percentiles_come_exact_from_fortios_access_log(tmp_path):
    # fortio 1.68.2 load -qps 100 -c 2 -n 20 -access-log-file F (its own JSON lines, latencies cut down)
    rate = with_fortio([BY_NAME["rate1k"]], Path("/c/fortio"))[0]
    result_file = tmp_path / "out.json"
    argv = rate.command("http://127.0.0.1:1/", 10, False, result_file)
    assert argv[argv.index("-access-log-file") + 1] == str(access_log(result_file))
    result_file.write_text(sample("fortio.json"))  # its histogram says p99 0.85 ms, p99.9 5.0 ms
    latencies_us = [100 + i for i in range(199)] + [437]  # 200 requests: p50 199 us, p99 297 us, max 437 us
    access_log(result_file).write_text("".join(
        json.dumps({"latency": us / 1e6, "timestamp": 1795689125171221237 + i, "thread": i % 2, "iter": i // 2,
                    "ok": True, "details": "200"}) + "\n" for i, us in enumerate(latencies_us)))
    r = rate.parse("", result_file)
    assert (r.requests, r.errors) == (2000, 0)  # counts still from the -json result
    assert r.latency_ms == pytest.approx({"p50": 0.199, "p90": 0.279, "p99": 0.297, "p999": 0.437})
    access_log(result_file).unlink()  # no access log (an older fortio): the histogram's percentiles
    assert rate.parse("", result_file).latency_ms == pytest.approx({"p50": 0.1277922077922078, "p99": 0.85,
                                                                     "p999": 5.0})


def test_a_bad_fortio_access_log_line_is_named(tmp_path):
    log = tmp_path / "a.access"
    log.write_text('{"latency":0.0001}\nAborting\n')
    with pytest.raises(ValueError, match="a.access:2: not a fortio access log line"):
        fortio_access_log_latency(log)
    log.write_text("")
    with pytest.raises(ValueError, match="no requests logged"):
        fortio_access_log_latency(log)


def test_fortio_garbage_is_rejected():
    with pytest.raises(ValueError, match="not a fortio JSON result"):
        parse_fortio_json('{"RunType": "HTTP"}')
    with pytest.raises(ValueError, match="not a fortio JSON result"):
        parse_fortio_json("Aborting because of error\n")


def test_rate_scenarios_run_fortio_open_loop_or_fall_back_to_h2load():
    rate = [BY_NAME["rate1k"], BY_NAME["rate10k"], BY_NAME["h1"]]
    built = with_fortio(rate, Path("/cache/fortio-v1/fortio"))
    argv = built[1].command("http://127.0.0.1:1/", 10, False, Path("out.json"))
    assert argv[:2] == ["/cache/fortio-v1/fortio", "load"]
    assert {"-uniform", "-nocatchup"} <= set(argv) and argv[-1] == "http://127.0.0.1:1/"
    assert argv[argv.index("-qps") + 1] == "10000" and argv[argv.index("-json") + 1] == "out.json"
    assert argv[argv.index("-t") + 1] == "10s"
    assert built[2] is rate[2]
    fallback = with_fortio(rate, None)
    assert [s.tool for s in fallback] == ["h2load", "h2load", "wrk"]
    assert "fortio unavailable" in fallback[0].title
    assert fallback[0].command("http://127.0.0.1:1/", 10, False, Path("log"))[0] == "h2load"


def test_percentile_nearest_rank():
    values = list(range(1, 1001))
    assert [percentile(values, q) for q in (0, 50, 99, 99.9, 100)] == [1, 500, 990, 999, 1000]
    with pytest.raises(ValueError):
        percentile([], 50)


# === /proc ===


def test_proc_stat_cpu_with_spaces_and_parentheses_in_the_command_name():
    # /proc/PID/stat of a busy `yes` copied to "/tmp/x y) (z"
    assert parse_proc_stat(sample("proc-stat.txt")) == CpuTicks(user=33, system=115)


def test_cpu_ticks_add_and_subtract():
    assert CpuTicks(5, 7) - CpuTicks(2, 3) == CpuTicks(3, 4)
    assert CpuTicks(1, 2) + CpuTicks(3, 4) == CpuTicks(4, 6)


def test_cpu_ticks_of_a_live_process_grow_with_its_work():
    import os
    import time

    from bench.measure import CLOCK_TICKS

    before = cpu_ticks([os.getpid()])
    start = time.process_time()
    while time.process_time() - start < 0.3:
        pass
    spent = cpu_ticks([os.getpid()]) - before
    assert spent.user + spent.system >= 0.2 * CLOCK_TICKS


def test_a_vanished_pid_counts_as_nothing():
    # pid_max is at most 2**22: this pid cannot exist (a worker that exited between two reads).
    assert cpu_ticks([2**22 + 12345]) == CpuTicks(0, 0)


def test_peak_and_current_rss_from_proc_status():
    status = sample("proc-status.txt")
    assert (parse_status_kb(status), parse_status_kb(status, "VmRSS")) == (1668, 1668)
    assert parse_status_kb("Name:\tkthreadd\nState:\tS (sleeping)\n") == 0


# === syscalls ===


def test_perf_stat_syscall_counts_with_the_rest_as_other():
    counts = parse_perf_syscalls(sample("perf-syscalls.txt"))
    assert counts == {"writev": 21300, "recvfrom": 21303, "epoll_wait": 13728, "accept4": 3, "close": 3, "other": 5}
    assert sum(counts.values()) == 56342  # raw_syscalls:sys_enter


def test_perf_not_counted_lines_are_skipped():
    assert parse_perf_syscalls("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n") == {}


def test_strace_summary():
    counts = parse_strace_summary(sample("strace-c.txt"))
    assert counts == {"writev": 3278, "recvfrom": 3281, "epoll_wait": 1740, "close": 3, "accept4": 3,
                      "epoll_ctl": 3, "setsockopt": 2}
    assert sum(counts.values()) == 8310


# === report ===


def _sample(target: str, cpu_user_us: float, cpu_sys_us: float, requests: int = 1000, scenario: str = "h1",
            rnd: int = 0, p99: float = 1.0) -> Sample:
    return Sample(scenario=scenario, target=target, round=rnd, requests=requests, duration_s=1.0, rps=requests,
                  errors=0, latency_ms={"p50": 0.5, "p99": p99, "p999": 2.0}, cpu_user_us=cpu_user_us,
                  cpu_sys_us=cpu_sys_us, upstream_cpu_us=8000.0, peak_rss_kb=10240)


def _info() -> dict:
    return {"date": "2026-11-25", "command": "python bench/run.py", "notes": [],
            "machine": {"nproc": "2", "cpu": "AMD EPYC", "memory": "24 GiB", "kernel": "6.1", "os": "Debian"},
            "versions": {"nginx": "1.22.1", "haproxy": "HAProxy 2.6", "wrk": "wrk 4.1.0", "h2load": "h2load 1.52",
                         "rustc": "rustc 1.8x", "python": "3.11", "commit": "abc"},
            "load_before": ["0.1", "0.1", "0.1"], "load_after": ["1", "1", "1"],
            "settings": {"duration_s": 10, "warmup_s": 2, "rounds": 3, "syscalls": "perf", "proxy_cpu": "0",
                         "load_cpu": "1"}}


def test_medians_over_rounds_and_ratios_to_nginx_and_haproxy():
    samples = [
        # nginx: 20, 18, 30 us/req -> median 20
        _sample("nginx", 4000, 16000, rnd=0), _sample("nginx", 3000, 15000, rnd=1), _sample("nginx", 5000, 25000, rnd=2),
        _sample("haproxy", 5000, 20000),  # 25 us/req
        _sample("fastmesh", 6000, 12000, requests=1000),  # 18 us/req
    ]
    syscalls = [SyscallSample("h1", "fastmesh", "perf", 100, {"writev": 100, "recvfrom": 100, "other": 50})]
    result = build(_info(), [BY_NAME["h1"]], ["nginx", "haproxy", "fastmesh"], samples, syscalls,
                   {(0, "fastmesh"): 20 * 1024})
    rows = {r["target"]: r for r in result["scenarios"][0]["rows"]}
    assert rows["nginx"]["cpu_us"] == pytest.approx(20.0)
    assert rows["nginx"]["rounds"] == 3
    assert rows["fastmesh"]["x_nginx"] == pytest.approx(0.9)
    assert rows["fastmesh"]["x_haproxy"] == pytest.approx(0.72)
    assert rows["fastmesh"]["syscalls_per_req"] == pytest.approx(2.5)
    assert result["checks"][0].startswith("HTTP/1.1 CPU/req <= 1.0 x the better of nginx and HAProxy: met (18.0 vs 20.0")
    assert "idle RSS of fastmesh proxy (bench config, 1 route) <= 30 MB: met (20.0 MB)" in result["checks"]
    text = markdown(result, "x.png")
    assert "| fastmesh | 1,000 | 0.500 | 1.000 | 2.000 | 18.0 (6.0/12.0) | 0.90 | 0.72 | 8.0 | 2.50 | 10.0 | 0 |" in text
    assert "![CPU microseconds per request](x.png)" in text


def test_fixed_rate_scenarios_report_added_latency_over_direct():
    samples = [_sample("direct", 0, 8000, scenario="rate1k", p99=0.25),
               _sample("nginx", 0, 20000, scenario="rate1k", p99=0.40),
               _sample("fastmesh", 0, 20000, scenario="rate1k", p99=0.55)]
    result = build(_info(), [BY_NAME["rate1k"]], ["direct", "nginx", "fastmesh"], samples, [], {})
    rows = {r["target"]: r for r in result["scenarios"][0]["rows"]}
    assert rows["fastmesh"]["p99_over_direct"] == pytest.approx(0.30)
    assert result["checks"] == ["added p99 over direct at 1,000 req/s <= nginx's: MISSED (+0.300 vs +0.150 ms)"]


# === TLS scenarios (issue 5) ===


def _tls_scenarios():
    built = with_fortio([BY_NAME[n] for n in ("tls-plain", "tls", "tls-new", "h2tls")], Path("/c/fortio"))
    return {s.name: s for s in with_pki(built, Path("/p/client.pem"), Path("/p/client-key.pem"))}


def test_tls_scenarios_run_fortio_at_full_speed_with_the_client_certificate():
    sc = _tls_scenarios()
    tls = sc["tls"].command("https://127.0.0.1:1/", 10, False, Path("out.json"))
    assert tls[:2] == ["/c/fortio", "load"] and tls[-1] == "https://127.0.0.1:1/"
    assert tls[tls.index("-qps") + 1] == "0" and tls[tls.index("-c") + 1] == "50"
    assert tls[tls.index("-cert") + 1] == "/p/client.pem" and tls[tls.index("-key") + 1] == "/p/client-key.pem"
    assert "-k" in tls and tls[tls.index("-json") + 1] == "out.json"
    # closed loop: no schedule flags, keep-alive (fortio's default), HTTP/1.1
    assert not {"-uniform", "-nocatchup", "-keepalive=false", "-h2"} & set(tls)
    plain = sc["tls-plain"].command("http://127.0.0.1:1/", 10, False, Path("out.json"))
    assert plain == [a for a in tls if a not in ("-cert", "/p/client.pem", "-key", "/p/client-key.pem", "-k")][:-1] + [
        "http://127.0.0.1:1/"]
    new = sc["tls-new"].command("https://127.0.0.1:1/", 10, False, Path("out.json"))
    assert "-keepalive=false" in new and new[new.index("-c") + 1] == "10"
    assert "-h2" in sc["h2tls"].command("https://127.0.0.1:1/", 10, False, Path("out.json"))


def test_a_tls_scenario_without_the_client_certificate_is_an_error():
    (bare,) = with_fortio([BY_NAME["tls"]], Path("/c/fortio"))
    with pytest.raises(ValueError, match="no client certificate"):
        bare.command("https://127.0.0.1:1/", 10, False, Path("out.json"))


def test_without_fortio_the_tls_scenarios_are_dropped():
    left = with_fortio([BY_NAME[n] for n in ("h1", "tls-plain", "tls", "tls-new", "rate1k")], None)
    assert [s.name for s in left] == ["h1", "rate1k"] and left[1].tool == "h2load"


def test_make_bench_runs_the_tls_scenarios_but_not_h2tls():
    assert [s.name for s in select(None)] == ["h1", "h2c", "tls-plain", "tls", "tls-new"]


def test_tls_rows_carry_cpu_over_the_same_targets_plaintext_whatever_the_order():
    samples = [_sample("nginx", 5000, 15000, scenario="tls-plain"),  # 20 us/req
               _sample("fastmesh", 10000, 15000, scenario="tls-plain"),  # 25
               _sample("nginx", 10000, 20000, scenario="tls"),  # 30
               _sample("fastmesh", 10000, 20000, scenario="tls")]  # 30
    order = [BY_NAME["tls"], BY_NAME["tls-plain"]]  # the baseline listed after
    result = build(_info(), order, ["nginx", "fastmesh"], samples, [], {})
    tls, plain = result["scenarios"]
    assert tls["baseline"] == "tls-plain" and plain["baseline"] == ""
    rows = {r["target"]: r for r in tls["rows"]}
    assert rows["nginx"]["x_baseline"] == pytest.approx(1.5)
    assert rows["fastmesh"]["x_baseline"] == pytest.approx(1.2)
    assert rows["fastmesh"]["x_nginx"] == pytest.approx(1.0)
    text = markdown(result, None)
    assert "| CPU us/req (user/sys) | × nginx | × HAProxy | × tls-plain | upstream us/req |" in text
    assert "| fastmesh | 1,000 | 0.500 | 1.000 | 2.000 | 30.0 (10.0/20.0) | 1.00 | — | 1.20 | 8.0 |" in text
    # without the baseline in the run: no column
    alone = build(_info(), [BY_NAME["tls"]], ["nginx"], samples[2:3], [], {})
    assert alone["scenarios"][0]["baseline"] == "" and "× tls-plain" not in markdown(alone, None)


def test_a_scenario_an_order_of_magnitude_above_the_rest_is_plotted_on_its_own_axis():
    def sc(name: str, *cpu: float) -> dict:
        return {"name": name, "rows": [{"target": "nginx", "cpu_us": c} for c in cpu]}

    scenarios = [sc("tls-plain", 21, 27), sc("tls", 28, 30), sc("tls-new", 426, 1178), sc("h2tls", 35)]
    small, large = split_by_scale(scenarios)
    assert [s["name"] for s in small] == ["tls-plain", "tls", "h2tls"] and [s["name"] for s in large] == ["tls-new"]
    small, large = split_by_scale(scenarios[:2] + scenarios[3:])
    assert len(small) == 3 and large == []
