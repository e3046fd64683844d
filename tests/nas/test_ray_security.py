"""The pieces that keep a private Ray to itself, tested without starting Ray.

The wildcard check must be able to fail: it is shown flagging a fake wildcard entry and, inside a
loopback-only network namespace, a real socket bound to every interface. The end-to-end checks (a
private Ray and the test cluster listen on loopback only) are in ``test_executors.py``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from conftest import loopback_only

from nas.executors.ray_env import (AUTH_VARS, Listener, is_wildcard, joined_auth, listening_sockets, session_pids,
                                   token_auth, wildcard_listeners)


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "::ffff:0.0.0.0", "*", "", "0:0:0:0:0:0:0:0"])
def test_wildcard_addresses_are_flagged(ip):
    assert is_wildcard(ip)


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.5", "fe80::1%eth0"])
def test_specific_addresses_are_not(ip):
    assert not is_wildcard(ip)


def test_a_fake_wildcard_entry_fails_the_check():
    listeners = [Listener(1, "gcs_server", "tcp", "::ffff:127.0.0.1", 6379), Listener(2, "raylet", "tcp", "::", 4001),
                 Listener(3, "ray::IDLE", "udp", "0.0.0.0", 5000), Listener(4, "python", "tcp", "127.0.0.1", 4002)]
    assert [item.pid for item in wildcard_listeners(listeners)] == [2, 3]


def test_listening_sockets_sees_this_process_and_ignores_connected_ones():
    pytest.importorskip("psutil")
    with socket.socket() as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        server.bind(("127.0.0.1", 0))
        server.listen()
        udp.bind(("127.0.0.1", 0))
        with socket.create_connection(server.getsockname()) as client:
            found = listening_sockets(session_pids())
            client_port = client.getsockname()[1]
        ports = {(item.protocol, item.port) for item in found if item.pid == os.getpid()}
        assert ("tcp", server.getsockname()[1]) in ports and ("udp", udp.getsockname()[1]) in ports
        assert ("tcp", client_port) not in ports  # a connected socket is not a listener
        assert wildcard_listeners(item for item in found if item.pid == os.getpid()) == []


@pytest.mark.skipif(not loopback_only(), reason="binds every interface: only inside a loopback-only namespace")
def test_a_real_wildcard_listener_fails_the_check():
    pytest.importorskip("psutil")
    with socket.socket(socket.AF_INET6) as server:
        server.bind(("::", 0))
        server.listen()
        exposed = wildcard_listeners(listening_sockets(session_pids()))
        port = server.getsockname()[1]
    assert [(item.pid, item.port) for item in exposed] == [(os.getpid(), port)]


def _auth_env() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in AUTH_VARS}


def test_token_auth_replaces_stale_settings_and_restores_them(monkeypatch, tmp_path):
    pytest.importorskip("ray")
    stale = {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "stale", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}
    for key, value in stale.items():
        monkeypatch.setenv(key, value)
    with token_auth():
        first = _auth_env()
    with token_auth():
        second = _auth_env()
    assert first["RAY_AUTH_MODE"] == "token" and first["RAY_AUTH_TOKEN_PATH"] is None
    token = first["RAY_AUTH_TOKEN"] or ""
    assert len(token) == 48 and int(token, 16) >= 0 and second["RAY_AUTH_TOKEN"] != token  # fresh every time
    assert _auth_env() == stale


def test_joined_auth_keeps_the_users_settings(monkeypatch, tmp_path):
    pytest.importorskip("ray")
    users = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "users-token", "RAY_AUTH_TOKEN_PATH": None}
    for key, value in users.items():
        monkeypatch.setenv(key, value) if value else monkeypatch.delenv(key, raising=False)
    with joined_auth():
        assert _auth_env() == users
        os.environ["RAY_AUTH_MODE"] = "disabled"  # as Ray may change it itself
    assert _auth_env() == users


def test_joined_auth_passes_on_the_users_token_file_hidden_by_the_private_home(monkeypatch, tmp_path):
    pytest.importorskip("ray")
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in AUTH_VARS:
        monkeypatch.delenv(key, raising=False)
    with joined_auth():
        assert _auth_env() == dict.fromkeys(AUTH_VARS)  # no token file: nothing changes
    token_file = Path(tmp_path, ".ray", "auth_token")
    token_file.parent.mkdir()
    token_file.write_text("users-token")
    with joined_auth():
        assert _auth_env() == {"RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": str(token_file)}
    assert _auth_env() == dict.fromkeys(AUTH_VARS)
