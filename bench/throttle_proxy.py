#!/usr/bin/env python3
"""A TCP proxy that caps each connection's throughput, for upload benchmarks (stdlib only).

Every accepted connection gets its own upstream connection and its own token bucket per
direction: at most --rate bytes per second flow each way, whatever the other connections do.
It reads from one side only as fast as the bucket allows, so the sender is held back by TCP
flow control, as by a slow link. Prints one JSON line {"port", "pid"} on stdout when ready;
runs until SIGTERM or SIGINT.

  python3 bench/throttle_proxy.py --target 127.0.0.1:8089 --rate 20e6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

READ = 64 * 1024  # bytes per read: ~300 reads/s per connection at 20 MB/s, cheap for the loop


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float) -> None:
    """Copy reader to writer at no more than ``rate`` bytes/s (a token bucket of one read's size)."""
    loop = asyncio.get_running_loop()
    tokens, last = float(READ), loop.time()
    try:
        while True:
            data = await reader.read(READ)
            if not data:
                break
            now = loop.time()
            tokens = min(float(READ), tokens + (now - last) * rate) - len(data)
            last = now
            if tokens < 0:  # in debt: wait until the bucket has refilled to zero
                await asyncio.sleep(-tokens / rate)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # pass the half-close on (the other direction may still be busy)
    except (ConnectionError, OSError):
        pass


async def handle(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, host: str, port: int, rate: float
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(pump(client_r, up_w, rate), pump(up_r, client_w, rate))
    except asyncio.CancelledError:
        pass  # the proxy is shutting down with this connection open
    finally:
        for w in (up_w, client_w):
            w.close()


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, host, int(port), args.rate), "127.0.0.1", args.port, limit=READ
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"port": server.sockets[0].getsockname()[1], "pid": os.getpid()}), flush=True)
    async with server:
        await stop.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, metavar="HOST:PORT", help="where to forward connections")
    ap.add_argument("--rate", type=float, default=20e6, help="bytes per second per connection and direction")
    ap.add_argument("--port", type=int, default=0, help="listening port on 127.0.0.1 (default: a free one)")
    args = ap.parse_args()
    if args.rate <= 0:
        print("--rate must be positive", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
