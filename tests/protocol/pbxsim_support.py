"""Helpers shared by the pbxsim wire tests: a raw AMI client socket and an AMI stream splitter."""

from __future__ import annotations

import asyncio
import contextlib
import socket

IO_TIMEOUT = 5.0  # guards against hangs only; never reached when the server is right


def split_messages(data: bytes) -> list[bytes]:
    """Cut a CRLF stream into messages (lines up to and including an empty line)."""
    out: list[bytes] = []
    cur = b""
    for line in data.split(b"\r\n")[:-1]:
        cur += line + b"\r\n"
        if not line:
            out.append(cur)
            cur = b""
    assert cur == b"", "stream does not end with an empty line"
    return out


class Client:
    """A raw TCP client: bytes in, bytes out, nothing interpreted."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> Client:
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), IO_TIMEOUT)

    async def expect(self, expected: bytes) -> None:
        got = await self.read(len(expected))
        assert got == expected

    async def message(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)

    async def expect_eof(self) -> None:
        assert await asyncio.wait_for(self.reader.read(), IO_TIMEOUT) == b""

    async def expect_closed(self) -> None:
        """EOF or reset: an aborted connection may end either way."""
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(self.reader.read(), IO_TIMEOUT)
        assert self.reader.at_eof() or self.reader.exception() is not None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
