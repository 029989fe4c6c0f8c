"""A fast do-nothing Accoil for throughput benchmarks: asyncio, HTTP/1.1 keep-alive, 202.

    python -m bench.fast_accoil PORT

It parses just enough HTTP (request line, headers, Content-Length body) to answer every
POST with 202 and count them; it exists so that the server is not what a benchmark measures.
"""

from __future__ import annotations

import asyncio
import socket
import sys

ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            writer.write(ACCEPTED)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    print(f"http://127.0.0.1:{port}/segment", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
