"""The one place qnas starts, joins and leaves Ray, with the settings that keep Ray to itself.

Why one place: Ray left to its defaults probes cloud metadata (169.254.169.254), makes DNS lookups,
replaces ``127.0.0.1``/``localhost`` by the machine's outward IP found by a UDP "connect" to a
public resolver, and then listens on every interface. A private Ray (``executor.address: null``)
must be reachable by nobody else, so every ``ray.init`` of qnas goes through :class:`RaySession`:

- always: ``RAY_USAGE_STATS_ENABLED=0`` and a loopback ``RAY_USAGE_STATS_REPORT_URL`` (unless
  set), no dashboard, and, while Ray starts, ``HOME``/``TMPDIR`` pointing at a private folder with
  an empty ``ray_bootstrap_config.yaml`` (stops the metadata probe; Ray's processes keep them);
- a private Ray: node IP ``127.0.0.1`` (answered here, never resolved to the outward IP), which
  makes every Ray listener bind loopback only; token authentication with a fresh random token
  (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``; ``RAY_AUTH_TOKEN_PATH`` removed) set before
  ``ray.init`` so every Ray process inherits it, whatever the user's environment or a stale
  ``~/.ray/auth_token`` says; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's single-machine mode:
  its processes take ``127.0.0.1`` as "my IP" instead of asking a public resolver); a short
  ``RAY_TMPDIR`` (Unix socket paths must stay under 107 bytes); and a check that nothing it
  started listens on a wildcard address;
- a joined cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``): the user's own auth settings.
  Only the user's ``~/.ray/auth_token``, hidden by the private ``HOME``, is passed on as
  ``RAY_AUTH_TOKEN_PATH`` when no token is set otherwise.

These variables are restored when the session closes. Ray is imported only inside functions:
``kind: local`` never imports it.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

from search_spaces.errors import InputError

__all__ = ["SAFE_ENV", "AUTH_VARS", "SINGLE_MACHINE_ENV", "PRIVATE_NODE_IP", "import_ray", "safe_home",
           "ray_environment", "token_auth", "joined_auth", "refresh_ray_auth", "parse_address", "pinned_node_ip",
           "Listener", "is_wildcard", "listening_sockets", "session_pids", "wildcard_listeners", "RaySession",
           "current_session", "close_current_session"]

SAFE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/"}
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
SINGLE_MACHINE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's processes answer 127.0.0.1 for "my IP"
PRIVATE_NODE_IP = "127.0.0.1"
INSTALL_HINT = "pip install 'ray>=2.30' (or use executor.kind: local)"
log = logging.getLogger(__name__)


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
def _environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a value) or remove (None) environment variables; put back what was there after."""
    saved = {key: os.environ.get(key) for key in changes}
    _set_environ(changes)
    try:
        yield
    finally:
        _set_environ(saved)


def _set_environ(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def ray_environment(home: str | Path, ray_tmpdir: str | Path | None = None) -> Iterator[None]:
    """Set the safe variables (kept afterwards, unless set) and ``HOME``/``TMPDIR``/``RAY_TMPDIR`` (restored after).

    Authentication is not touched here: see :func:`token_auth` and :func:`joined_auth`.
    """
    for key, value in SAFE_ENV.items():
        os.environ.setdefault(key, value)
    temporary = {"HOME": str(safe_home(home)), "TMPDIR": str(home)}
    if ray_tmpdir is not None:
        temporary["RAY_TMPDIR"] = str(ray_tmpdir)
    with _environ(temporary):
        yield


def refresh_ray_auth() -> None:
    """Make this process's Ray see the auth variables as they are now.

    Ray caches the auth mode (its config) and the token per process; without this a second session
    in one process would present the first one's token. No-op for a Ray without token auth.
    """
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:
        return
    Config.initialize("")  # before dropping the token: a draining thread may reload it meanwhile
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _auth_variables(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Apply ``changes`` to the auth variables; restore all of them (Ray may set some itself) after."""
    saved = {key: os.environ.get(key) for key in AUTH_VARS}
    _set_environ(changes)
    refresh_ray_auth()
    try:
        yield
    finally:
        _set_environ(saved)
        refresh_ray_auth()


@contextmanager
def token_auth() -> Iterator[None]:
    """Token auth with a fresh random token for the Ray started inside; the previous settings after.

    Set in this process's environment, so every Ray process spawned meanwhile inherits it; the
    token outranks ``RAY_AUTH_TOKEN_PATH`` and ``~/.ray/auth_token``, and it is never logged.
    """
    with _auth_variables({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24),
                          "RAY_AUTH_TOKEN_PATH": None}):
        yield


@contextmanager
def joined_auth() -> Iterator[None]:
    """The user's auth settings for joining their cluster; restored after (Ray may change them).

    The private ``HOME`` qnas gives Ray hides the user's ``~/.ray/auth_token``: when no token is set
    otherwise, that file is named in ``RAY_AUTH_TOKEN_PATH``, as Ray itself would have found it.
    """
    changes: dict[str, str | None] = {}
    default = Path.home() / ".ray" / "auth_token"
    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH") and default.is_file():
        changes["RAY_AUTH_TOKEN_PATH"] = str(default)
    with _auth_variables(changes):
        yield


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
def pinned_node_ip(ip: str = PRIVATE_NODE_IP) -> Iterator[None]:
    """Make Ray's "what is my IP" answer ``ip`` in this process while no node is connected.

    ``ray.init(_node_ip_address="127.0.0.1")`` and ``ray.cluster_utils.Cluster.add_node`` ask it,
    and Ray answers with a UDP connect to 8.8.8.8: on a machine with a network, the outward IP,
    on which Ray then listens on every interface. This keeps it on loopback.
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


# ---- who listens where ----------------------------------------------------------------------------
class Listener(NamedTuple):
    """A socket that accepts traffic: TCP in LISTEN, or UDP bound and not connected."""

    pid: int
    name: str
    protocol: str
    ip: str
    port: int


def is_wildcard(ip: str) -> bool:
    """Whether a socket bound to ``ip`` takes traffic from every interface (``0.0.0.0``, ``::``, ``*``)."""
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip in ("", "*")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_unspecified


def session_pids() -> list[int]:
    """This process and all its descendants (a private Ray's gcs_server, raylet, workers, agents)."""
    import psutil

    me = psutil.Process()
    return [me.pid] + [child.pid for child in me.children(recursive=True)]


def listening_sockets(pids: Iterable[int]) -> list[Listener]:
    """Every listener of ``pids`` (processes gone or not readable are skipped)."""
    return [item for pid in pids for item in _process_listeners(pid)]


def _process_listeners(pid: int) -> list[Listener]:
    import psutil

    try:
        process = psutil.Process(pid)
        name = process.name()
        connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6: connections
        sockets = connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []
    found = []
    for conn in sockets:
        tcp = conn.type == socket.SOCK_STREAM
        if (tcp and conn.status == psutil.CONN_LISTEN) or (not tcp and conn.laddr and not conn.raddr):
            found.append(Listener(pid, name, "tcp" if tcp else "udp", conn.laddr.ip, conn.laddr.port))
    return found


def wildcard_listeners(listeners: Iterable[Listener]) -> list[Listener]:
    """The listeners reachable from every interface."""
    return [item for item in listeners if is_wildcard(item.ip)]


def _listeners_now() -> set[Listener] | None:
    """The listeners of this process and its descendants; None (and a warning) without psutil."""
    try:
        return set(listening_sockets(session_pids()))
    except ImportError:
        log.warning("psutil is not installed: qnas cannot check that its private Ray listens on loopback only")
        return None


def _describe(listeners: Iterable[Listener]) -> str:
    return ", ".join(f"{item.name} {item.protocol} {item.ip}:{item.port}" for item in listeners)


def _auth_error(ray: Any) -> type[BaseException]:
    """Ray's error for a refused or missing token (ConnectionError on a Ray without token auth)."""
    return getattr(ray.exceptions, "AuthenticationError", ConnectionError)


def _warn_without_token_auth(ray: Any) -> None:
    """Say so when this Ray predates token auth: its private Ray is then open to every local user."""
    try:
        from ray._raylet import AuthenticationTokenLoader  # noqa: F401
    except ImportError:
        log.warning("Ray %s has no token authentication: the private Ray listens on loopback only, but any "
                    "user of this machine can reach it; upgrade Ray", ray.__version__)


def _refused_token(err: BaseException | None, ray: Any) -> bool:
    """Whether ``err`` or an error behind it is Ray's refused or missing token."""
    while err is not None:
        if isinstance(err, _auth_error(ray)) or "InvalidAuthToken" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


# ---- sessions -------------------------------------------------------------------------------------
class RaySession:
    """A connection to Ray opened by qnas: a private Ray on this machine, or an existing cluster.

    ``address``: None starts a private single-node Ray (loopback only, token auth, no dashboard);
    ``"auto"`` joins the cluster started on this machine with ``ray start``; ``HOST:PORT`` /
    ``ray://HOST:PORT`` join that one, with the user's own settings. When Ray is already initialised
    in this process (a notebook), that connection is used and left open on :meth:`close`.
    """

    def __init__(self, address: str | None, *, num_cpus: float | None = None) -> None:
        self.ray = import_ray()
        self.address = address
        self.owned = False
        self._tmp: Path | None = None
        self._env = ExitStack()  # the environment variables this session set
        if self.ray.is_initialized():
            return
        if address not in (None, "auto"):
            _check_reachable(address)
        self._tmp = Path(tempfile.mkdtemp(prefix="qr", dir="/tmp"))  # short: Unix socket paths
        try:
            self._open(num_cpus)
        except BaseException:
            if self.ray.is_initialized():
                self.ray.shutdown()
            self._release()
            raise
        self.owned = True
        atexit.register(self.close)

    def _open(self, num_cpus: float | None) -> None:
        """The settings of this kind of session, ``ray.init``, and for a private Ray the wildcard check."""
        private = self.address is None
        self._env.enter_context(token_auth() if private else joined_auth())
        if private:
            self._env.enter_context(_environ(SINGLE_MACHINE_ENV))
            _warn_without_token_auth(self.ray)
        before = _listeners_now() if private else None
        self._init(num_cpus)
        if before is not None:
            self._check_private(before)

    def _init(self, num_cpus: float | None) -> None:
        assert self._tmp is not None
        private = self.address is None
        with ray_environment(self._tmp / "home", self._tmp / "rt" if private else None), \
                pinned_node_ip(PRIVATE_NODE_IP) if private else nullcontext():
            if self.address is not None and self.address != "auto" and not self.address.startswith("ray://"):
                self._check_token()
            try:
                self.ray.init(address=self.address, **self._init_options(num_cpus))
            except (ConnectionError, RuntimeError, TimeoutError, _auth_error(self.ray)) as err:
                raise self._connect_error(err) from None

    def _init_options(self, num_cpus: float | None) -> dict[str, Any]:
        """``ray.init`` options: none for Ray Client (it forwards them to the server); a private Ray's own."""
        if (self.address or "").startswith("ray://"):
            return {}
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if self.address is None:
            options.update(num_cpus=num_cpus or os.cpu_count() or 1, _node_ip_address=PRIVATE_NODE_IP)
        return options

    def _check_token(self) -> None:
        """Fail at once when the cluster refuses this process's token (``ray.init`` retries for many seconds)."""
        try:
            from ray._raylet import GcsClient
        except ImportError:
            return
        try:
            GcsClient(address=self.address)
        except _auth_error(self.ray) as err:
            raise self._connect_error(err) from None
        except Exception:  # noqa: BLE001 - anything else is ray.init's to report
            return

    def _connect_error(self, err: BaseException) -> InputError:
        """One line naming ``executor.address``; for a refused token, how to give this process the cluster's."""
        where = "on this machine (address: auto)" if self.address == "auto" else f"at {self.address!r}"
        if _refused_token(err, self.ray):
            mode = os.environ.get("RAY_AUTH_MODE", "unset")
            return InputError(f"cannot connect to a Ray cluster {where}: this process presents no token it "
                              f"accepts (RAY_AUTH_MODE is {mode} here); set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                              "or RAY_AUTH_TOKEN_PATH to the cluster's token (`ray get-auth-token` on its head "
                              "prints it)", field="executor.address")
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        return InputError(f"cannot connect to a Ray cluster {where}: {first}; start one with `ray start --head` or "
                          "set executor.address", field="executor.address")

    def _check_private(self, before: set[Listener]) -> None:
        """Refuse a private Ray that listens on a wildcard address (reachable from the network)."""
        now = _listeners_now()
        exposed = wildcard_listeners(sorted((now or set()) - before))
        if exposed:
            raise InputError(f"the private Ray listens on a wildcard address, reachable from the network "
                             f"({_describe(exposed)}); qnas stopped it. Start Ray yourself with the settings you "
                             "trust (`ray start --head`, token auth) and set executor.address: auto",
                             field="executor.address")

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
        """Disconnect (a private Ray stops), restore the auth settings, remove the temporary files; idempotent."""
        global _CURRENT
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False
        self._release()
        if _CURRENT is self:
            _CURRENT = None

    def _release(self) -> None:
        """Restore the environment variables and remove the session's temporary files."""
        self._env.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


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


def close_current_session() -> None:
    """Close the open session, if any (what :func:`current_session` opened for a run)."""
    if _CURRENT is not None:
        _CURRENT.close()
