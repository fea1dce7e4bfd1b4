"""A connection that does not finish its request's headers in time is closed."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.fix_server import Server

pytestmark = pytest.mark.integration


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(120)  # far beyond the 10 s default: the server must act first
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_half_sent_headers_and_silent_sockets_are_closed(server: Server) -> None:
    half = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        for n, sock in enumerate(half):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * n)
        assert all(_closed_by_server(s) for s in half + silent)
    finally:
        for sock in half + silent:
            sock.close()
    assert httpx.get(f"{server.base_url}/healthz", timeout=30).status_code == 200


def test_a_second_request_on_a_kept_alive_connection_gets_the_same_deadline(
    server: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(30)
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        head, body = response.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:  # the whole response, so the next read is the server's
            body += sock.recv(4096)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock)
