"""The one place qnas starts, joins and leaves Ray, with the settings that keep Ray on loopback.

Why one place: Ray left to its defaults probes cloud metadata (169.254.169.254), makes DNS lookups
and replaces ``127.0.0.1``/``localhost`` by the machine's outward IP found by a UDP "connect" to a
public resolver. On machines that must only talk to loopback (and in tests) none of that may
happen, so every ``ray.init`` of qnas goes through :class:`RaySession`, which sets:

- ``RAY_AUTH_MODE=disabled`` (a stale ``~/.ray/auth_token`` would turn auth on silently),
  ``RAY_USAGE_STATS_ENABLED=0`` and a loopback ``RAY_USAGE_STATS_REPORT_URL`` — unless already set;
- while Ray starts: ``HOME`` and ``TMPDIR`` pointing at a private folder holding an empty
  ``ray_bootstrap_config.yaml`` (stops the metadata probe); the processes Ray spawns keep them;
- a short ``RAY_TMPDIR`` (Unix socket paths must stay under 107 bytes), no dashboard, and the node
  address ``127.0.0.2`` (loopback that Ray leaves alone) when qnas starts its own Ray.

Ray is imported only inside functions: ``kind: local`` never imports it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from search_spaces.errors import InputError

__all__ = ["SAFE_ENV", "LOOPBACK_IPS", "import_ray", "safe_home", "ray_environment", "parse_address",
           "RaySession", "current_session", "pinned_node_ip"]

SAFE_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/"}
LOOPBACK_IPS = ("127.0.0.2", "127.0.0.3")
INSTALL_HINT = "pip install 'ray>=2.30' (or use executor.kind: local)"


def import_ray() -> Any:
    """``import ray``, or one InputError that names ``executor.kind`` and how to install Ray."""
    try:
        import ray
    except ImportError as err:
        raise InputError(f"kind 'ray' needs the ray package, which cannot be imported ({err}); {INSTALL_HINT}",
                         field="executor.kind") from None
    return ray


def safe_home(folder: str | Path) -> Path:
    """``folder`` made fit to be Ray's ``HOME``: it holds an empty ``ray_bootstrap_config.yaml``."""
    home = Path(folder)
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").touch()
    return home


@contextmanager
def ray_environment(home: str | Path, ray_tmpdir: str | Path | None = None) -> Iterator[None]:
    """Set the safe variables (kept afterwards) and ``HOME``/``TMPDIR``/``RAY_TMPDIR`` (restored after)."""
    for key, value in SAFE_ENV.items():
        os.environ.setdefault(key, value)
    temporary = {"HOME": str(safe_home(home)), "TMPDIR": str(home)}
    if ray_tmpdir is not None:
        temporary["RAY_TMPDIR"] = str(ray_tmpdir)
    saved = {key: os.environ.get(key) for key in temporary}
    os.environ.update(temporary)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; an InputError for anything else."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"got {address!r}; expected null (start Ray here), 'auto' (the cluster started on this "
                         "machine with `ray start`), 'HOST:PORT' or 'ray://HOST:PORT'", field="executor.address")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast (seconds, not Ray's long retries) when nothing listens at ``address``."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InputError(f"cannot reach a Ray cluster at {address!r} ({reason}); start one with `ray start --head` "
                         "there, or check the host and port", field="executor.address") from None


@contextmanager
def pinned_node_ip(ip: str = LOOPBACK_IPS[0]) -> Iterator[None]:
    """Make Ray's "what is my IP" answer ``ip`` in this process while no node is connected.

    ``ray.cluster_utils.Cluster.add_node`` (tests, benchmarks) asks it, and Ray answers with a UDP
    connect to 8.8.8.8; this keeps it on loopback.
    """
    import ray._private.services as services
    import ray._private.worker as worker

    original = services.get_node_ip_address

    def answer(address: str | None = None) -> str:
        return original(address) if worker._global_node is not None else ip

    services.get_node_ip_address = answer
    try:
        yield
    finally:
        services.get_node_ip_address = original


class RaySession:
    """A connection to Ray opened by qnas: a private Ray on this machine, or an existing cluster.

    ``address``: None starts a private single-node Ray (loopback, no dashboard); ``"auto"`` joins the
    cluster started on this machine with ``ray start``; ``HOST:PORT`` / ``ray://HOST:PORT`` join that
    one. When Ray is already initialised in this process (a notebook), that connection is used and
    left open on :meth:`close`.
    """

    def __init__(self, address: str | None, *, num_cpus: float | None = None) -> None:
        self.ray = import_ray()
        self.address = address
        self.owned = False
        self._tmp: Path | None = None
        if self.ray.is_initialized():
            return
        if address not in (None, "auto"):
            _check_reachable(address)
        self._tmp = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))  # short: Unix socket paths
        try:
            self._init(num_cpus)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.owned = True
        atexit.register(self.close)

    def _init(self, num_cpus: float | None) -> None:
        assert self._tmp is not None
        private = self.address is None
        with ray_environment(self._tmp / "home", self._tmp / "rt" if private else None):
            client = (self.address or "").startswith("ray://")  # Ray Client forwards init options to the server
            kwargs: dict[str, Any] = {} if client else {"include_dashboard": False, "logging_level": logging.WARNING}
            if private:
                kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, _node_ip_address=LOOPBACK_IPS[0])
            try:
                self.ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, TimeoutError) as err:
                first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
                where = "on this machine (address: auto)" if self.address == "auto" else f"at {self.address!r}"
                raise InputError(f"cannot connect to a Ray cluster {where}: {first}; start one with "
                                 "`ray start --head` or set executor.address", field="executor.address") from None

    def nodes(self) -> list[Mapping[str, float]]:
        """Total resources of every alive node."""
        return [dict(n["Resources"]) for n in self.ray.nodes() if n.get("Alive")]

    def describe(self) -> str:
        """Where evaluations run, for logs."""
        if not self.owned:
            return "the Ray connection already open in this process"
        cpus = sum(n.get("CPU", 0.0) for n in self.nodes())
        where = "a private Ray on this machine" if self.address is None else f"Ray cluster {self.address}"
        return f"{where} ({len(self.nodes())} node(s), {cpus:g} CPUs)"

    def close(self) -> None:
        """Disconnect (a private Ray stops) and remove the session's temporary files; idempotent."""
        global _CURRENT
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if _CURRENT is self:
            _CURRENT = None


_CURRENT: RaySession | None = None


def current_session(address: str | None, *, num_cpus: float | None = None) -> RaySession:
    """The open session for ``address`` (the pre-flight check opens it, the run reuses it), else a new one."""
    global _CURRENT
    if _CURRENT is not None and _CURRENT.address == address and (not _CURRENT.owned or _CURRENT.ray.is_initialized()):
        return _CURRENT
    if _CURRENT is not None:
        _CURRENT.close()
    _CURRENT = RaySession(address, num_cpus=num_cpus)
    return _CURRENT
