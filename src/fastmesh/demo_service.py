"""A tiny HTTP/1.1 service for the demo: answers every request with its name and its caller.

    python -m fastmesh.demo_service --name reviews-v1 --address 127.0.0.1:18081

The answer is one line, `hello from NAME, caller CALLER`: CALLER is the SPIFFE ID its sidecar
verified (the `URI=` of `x-forwarded-client-cert`, which only the sidecar sets), or `none (no mTLS)`.
Prints one line `listening NAME IP:PORT` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import uvloop

from fastmesh import http1
from fastmesh.http1 import Request, Response

NO_CALLER = "none (no mTLS)"


def caller(xfcc: str | None) -> str:
    """The URI of the last element of an `x-forwarded-client-cert` value (Envoy's format:
    `By=...;Hash=...;URI=spiffe://...`, elements separated by commas), or NO_CALLER."""
    if not xfcc:
        return NO_CALLER
    for pair in xfcc.rsplit(",", 1)[-1].split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip().lower() == "uri" and value.strip().strip('"'):
            return value.strip().strip('"')
    return NO_CALLER


def answer_line(name: str, xfcc: str | None) -> str:
    return f"hello from {name}, caller {caller(xfcc)}"


def handler(name: str) -> http1.Handler:
    async def answer(request: Request) -> Response:
        body = answer_line(name, request.headers.get("x-forwarded-client-cert")) + "\n"
        return Response(200, body.encode(), headers=[("x-served-by", name)])

    return answer


async def serve(name: str, address: str) -> None:
    server, bound = await http1.start_server(handler(name), address)
    print(f"listening {name} {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="fastmesh.demo_service", description=__doc__)
    args.add_argument("--name", required=True, help="the name it answers with, e.g. reviews-v1")
    args.add_argument("--address", default="127.0.0.1:0", help="ip:port to listen on")
    opts = args.parse_args(argv)
    try:
        uvloop.run(serve(opts.name, opts.address))
    except OSError as e:
        print(f"demo service {opts.name}: cannot listen on {opts.address}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
