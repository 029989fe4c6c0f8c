"""A fast do-nothing Accoil for throughput benchmarks: asyncio, HTTP/1.1 keep-alive, 202.

    python -m bench.fast_accoil PORT [LATENCY_MS]

It parses just enough HTTP (request line, headers, Content-Length body) to answer every
POST with 202 after LATENCY_MS (a round trip across the internet, waited without holding a
CPU); it exists so that the server is not what a benchmark measures. A GET answers how many
POSTs it has answered, so a benchmark can tell whether anything was sent twice.
"""

from __future__ import annotations

import asyncio
import socket
import sys

ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"


class Accoil:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.answered = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                if head.startswith(b"GET"):
                    count = str(self.answered).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(count), count)
                    )
                    continue
                if self.latency:
                    await asyncio.sleep(self.latency)
                self.answered += 1
                writer.write(ACCEPTED)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(port: int, latency: float) -> None:
    accoil = Accoil(latency)
    server = await asyncio.start_server(accoil.serve, "127.0.0.1", port, backlog=4096)
    print(f"http://127.0.0.1:{port}/segment", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0))
