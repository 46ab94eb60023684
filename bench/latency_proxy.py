"""A TCP proxy that adds a fixed delay to every request on its way to the server.

Why: on loopback every S3 request is answered in a few milliseconds of the server's own CPU, so
the S3 benchmark alone cannot show what concurrent I/O is for: hiding the network's round trips.
Real S3 answers a small request in "tens of milliseconds" at the median (AWS, *Best Practices
Design Patterns: Optimizing Amazon S3 Performance*, "Timeouts and retries for latency-sensitive
applications"). This proxy sits between the client and the loopback server and holds each chunk
the client sends for `delay_ms` before forwarding it (in order, without serialising chunks:
a chunk that arrives while another waits is due `delay_ms` after its own arrival), so every
request costs one more round trip of `delay_ms`, as a distant server would. Responses pass
straight through. It adds latency, not bandwidth limits or server capacity: the server behind it
still does all the work.

    python -m bench.latency_proxy --upstream 127.0.0.1:PORT --delay-ms 20   # prints its own port
"""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((loop.time() + delay, data))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((loop.time() + delay, b""))

    async def forward() -> None:
        try:
            while True:
                due, data = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    await asyncio.gather(receive(), forward())


async def serve(upstream_host: str, upstream_port: int, delay_ms: float) -> None:
    delay = delay_ms / 1000

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pump(client_reader, server_writer, delay), _pump(server_reader, client_writer, 0.0))
        finally:
            for writer in (server_writer, client_writer):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to every request, milliseconds")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    try:
        asyncio.run(serve(host, int(port), args.delay_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
