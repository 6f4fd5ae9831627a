"""A small HTTP/1.1 keep-alive load generator (asyncio + uvloop, raw sockets), run as its own process.

httpx spends more CPU per request than the API does on /livez, so with it the client was the bottleneck;
this one writes a fixed request and reads the reply by Content-Length. It prints one JSON line:
    python benchmarks/http_load.py --port 8000 --path /livez --seconds 10 --clients 16 [--header 'K: V']
`--serve PORT` instead runs a trivial server answering a fixed 200, to measure this client's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import uvloop

_FIXED = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{"status":"ok"}'


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17 : end])


async def _client(host: str, port: int, request: bytes, stop: float, times: list[float], errors: list[int]) -> None:
    while time.monotonic() < stop:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_content_length(head))
                times.append(time.perf_counter() - t0)
                if head[9:12] != b"200":
                    errors[0] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            errors[0] += 1  # the server closed the connection (a crash or a 500): count it and reconnect
        finally:
            writer.close()


def _summary(times: list[float], errors: int, wall: float, clients: int) -> dict[str, Any]:
    times.sort()
    n = len(times)
    return {
        "clients": clients,
        "requests": n,
        "errors": errors,
        "rps": round(n / wall, 1),
        "p50_ms": round(1000 * times[n // 2], 2) if n else None,
        "p99_ms": round(1000 * times[int(0.99 * (n - 1))], 2) if n else None,
    }


async def load(host: str, port: int, path: str, headers: list[str], seconds: float, clients: int) -> dict[str, Any]:
    """Drive GET path with `clients` keep-alive connections for `seconds`; req/s and latency percentiles."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    times: list[float] = []
    errors = [0]
    t0 = time.monotonic()
    await asyncio.gather(*(_client(host, port, request, t0 + seconds, times, errors) for _ in range(clients)))
    return _summary(times, errors[0], time.monotonic() - t0, clients)


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(_FIXED)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--path", default="/livez")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--serve", type=int, help="run the trivial fixed-reply server on this port instead")
    args = ap.parse_args()
    if args.serve:
        uvloop.run(_serve(args.serve))
        return
    print(json.dumps(uvloop.run(load(args.host, args.port, args.path, args.header, args.seconds, args.clients))))


if __name__ == "__main__":
    main()
