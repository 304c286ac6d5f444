"""A tiny HTTP/1.1 service for the demo: answers every request with "hello from NAME".

    python -m fastmesh.demo_service --name reviews-v1 --address 127.0.0.1:18081

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


def handler(name: str) -> http1.Handler:
    body = f"hello from {name}\n".encode()

    async def answer(request: Request) -> Response:
        return Response(200, body, headers=[("x-served-by", name)])

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
