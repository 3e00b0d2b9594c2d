"""Real Mosquitto and InfluxDB 1.x servers run as child processes.

``roadwave demo`` and the test fixtures use these classes instead of system services.
Each server gets a generated config file, its data and its log inside a working
directory you choose, and listens by default on a free loopback port.
The child runs in its own process group: :meth:`stop` terminates the group (SIGTERM,
then SIGKILL), and an ``atexit`` hook stops whatever is still running when the
interpreter exits normally.

Typical use::

    with Mosquitto(tmp / "mqtt") as broker, InfluxDB1(tmp / "influx") as influx:
        print(broker.port, influx.url, influx.version)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from roadwave import pki
from roadwave.acl import write_acl
from roadwave.registry import FleetRegistry

__all__ = [
    "ExecutableNotFoundError",
    "InfluxDB1",
    "Mosquitto",
    "MosquittoConfigError",
    "MosquittoTls",
    "PortInUseError",
    "ServiceError",
    "free_port",
    "mosquitto_config",
    "write_broker_files",
]

log = logging.getLogger(__name__)

_FALLBACK_DIRS = (Path("/usr/sbin"), Path("/usr/bin"))
_PORT_ATTEMPTS = 3
_POLL_INTERVAL_S = 0.02
_LOG_TAIL_LINES = 15
_RPC_HOST = "127.0.0.1"
#: What Mosquitto logs when SIGHUP makes it read its files again.
_RELOAD_MARKER = "Reloading config"
# Loopback HTTP must never go through a proxy configured in the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Children still running, by pid, so the atexit hook can stop them.
_running: dict[int, subprocess.Popen[bytes]] = {}


class ServiceError(RuntimeError):
    """A server could not be found, started, stopped or queried; the message says why."""


class ExecutableNotFoundError(ServiceError):
    """The server's executable is not installed."""


class PortInUseError(ServiceError):
    """The server exited at start-up because one of its ports was already in use."""


class MosquittoConfigError(ValueError):
    """A value that cannot go into a Mosquitto configuration file; the message says which."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (it may be taken later)."""
    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _host_port(host: str, port: int) -> str:
    """Format ``host:port``, bracketing IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _find_executable(name: str, package: str) -> str:
    """Locate ``name`` on PATH, then in /usr/sbin and /usr/bin (often not on PATH)."""
    found = shutil.which(name)
    if found is None and os.sep not in name:
        found = next(
            (str(d / name) for d in _FALLBACK_DIRS if shutil.which(name, path=str(d))),
            None,
        )
    if found is None:
        raise ExecutableNotFoundError(
            f"{name} not found on PATH, /usr/sbin or /usr/bin: install it with "
            f"`sudo apt-get install {package}` (Debian/Ubuntu) or run `make setup`"
        )
    return found


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``timeout`` s, and reap it."""
    _running.pop(proc.pid, None)
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored %s for %.1f s", proc.pid, sig.name, timeout)
    raise ServiceError(f"pid {proc.pid} did not exit even after SIGKILL")


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_running.values()):
        log.warning("stopping leftover server pid %d at exit", proc.pid)
        _terminate(proc, timeout=5.0)


class _ChildServer(ABC):
    """Life cycle shared by the servers: write config, launch, wait until ready, stop."""

    name: ClassVar[str]
    """Short name used in messages and file names."""
    package: ClassVar[str]
    """Debian/Ubuntu package that provides the executable."""
    ready_marker: ClassVar[re.Pattern[str]]
    """Log line the server prints once its listeners are open."""

    def __init__(
        self,
        workdir: Path,
        port: int | None,
        host: str,
        executable: str,
        start_timeout: float,
        stop_timeout: float,
    ) -> None:
        self.workdir = Path(workdir)
        self._host = host
        self._fixed_port = port
        self._port = port
        self._executable = executable
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """TCP port the server listens on; chosen by :meth:`start` unless given."""
        if self._port is None:
            raise ServiceError(f"{self.name} has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path:
        """Generated configuration file."""
        return self.workdir / f"{self.name}.conf"

    @property
    def log_path(self) -> Path:
        """File receiving the server's log and its stdout/stderr."""
        return self.workdir / f"{self.name}.log"

    def start(self) -> Self:
        """Start the server and wait until it serves; no-op if it is running.

        A server restarted with :meth:`start` after :meth:`stop` keeps its port.
        Automatically chosen ports that turn out to be taken are replaced (a few times).
        """
        if self.running:
            return self
        executable = _find_executable(self._executable, self.package)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_ATTEMPTS):
            self._assign_ports(fresh=attempt > 0)
            try:
                self._launch_and_wait(executable)
                return self
            except PortInUseError as exc:
                error = exc
                if self._fixed_port is not None:
                    break
                log.info("%s: a port was taken meanwhile, retrying on new ports", self.name)
        raise error

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after the stop timeout); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _terminate(proc, self._stop_timeout)
        log.info("%s (pid %d) stopped, exit code %s", self.name, proc.pid, proc.returncode)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {_host_port(self._host, self._port or 0)} {state}>"

    def _assign_ports(self, fresh: bool) -> None:
        """Pick free ports for those not fixed by the caller (new ones if ``fresh``)."""
        if self._fixed_port is None and (fresh or self._port is None):
            self._port = free_port(self._host)

    @abstractmethod
    def _render_config(self) -> str:
        """Return the complete configuration file text."""

    @abstractmethod
    def _command(self, executable: str) -> list[str]:
        """Return the argv that runs the server with :attr:`config_path`."""

    @abstractmethod
    def _probe(self) -> bool:
        """Return True once the server answers on its port."""

    def _child_env(self) -> dict[str, str]:
        """Environment for the child process."""
        return dict(os.environ)

    def _launch_and_wait(self, executable: str) -> None:
        self.config_path.write_text(self._render_config(), encoding="utf-8")
        self.log_path.write_bytes(b"")
        started = time.monotonic()
        # Append mode: the server may open the same file for its own log.
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                self._command(executable),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._child_env(),
                start_new_session=True,
            )
        _running[self._proc.pid] = self._proc
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info(
            "%s ready on %s in %.2f s (pid %d, log %s)",
            self.name,
            _host_port(self._host, self.port),
            time.monotonic() - started,
            self._proc.pid,
            self.log_path,
        )

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        address = _host_port(self._host, self.port)
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail()
                if "address already in use" in tail.lower():
                    raise PortInUseError(
                        f"{self.name} could not listen on {address}: address already in "
                        f"use; choose another port or stop the process holding it. "
                        f"Last lines of {self.log_path}:\n{tail}"
                    )
                raise ServiceError(
                    f"{self.name} exited with code {code} while starting on {address}; "
                    f"last lines of {self.log_path}:\n{tail}"
                )
            if self.ready_marker.search(self._read_log()) and self._probe():
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not become ready on {address} within "
                    f"{self._start_timeout:g} s; last lines of {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self) -> str:
        lines = self._read_log().splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(log is empty)"


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS-only listener: client certificates required and checked against the CRL.

    The certificate's Common Name becomes the MQTT username
    (``use_identity_as_username``), which the ACL file's ``user`` blocks grant topics
    to; there is no anonymous access. Mosquitto reads every file at start-up; send the
    broker SIGHUP to reload them (see docs/security.md for what that does and does not
    change). ``client_id_from_identity`` makes the Common Name the client id too
    (``use_username_as_clientid``): no client can then take over another's session, but
    an identity can hold only one connection at a time.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path
    acl_file: Path
    #: Oldest TLS version accepted (Mosquitto's ``tls_version`` is a minimum since 2.0).
    min_version: str = "tlsv1.2"
    client_id_from_identity: bool = False

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "crl_file", "acl_file"):
            _config_value(name, str(getattr(self, name)))
        if self.min_version not in ("tlsv1.2", "tlsv1.3"):
            raise MosquittoConfigError(f"min_version must be tlsv1.2 or tlsv1.3, got {self.min_version!r}")

    def config_lines(self) -> list[str]:
        """The lines that follow a ``listener`` line, and the global authorisation settings."""
        return [
            f"cafile {self.ca_file}",
            f"certfile {self.cert_file}",
            f"keyfile {self.key_file}",
            f"crlfile {self.crl_file}",
            "require_certificate true",
            "use_identity_as_username true",
            *(["use_username_as_clientid true"] if self.client_id_from_identity else []),
            f"tls_version {self.min_version}",
            # Global settings (per_listener_settings is false).
            "allow_anonymous false",
            f"acl_file {self.acl_file}",
        ]


def write_broker_files(
    fleet_pki: pki.FleetPki,
    registry: FleetRegistry,
    broker: str,
    out: Path,
    *,
    paths_as: Path | None = None,
    owner: str | None = None,
    client_id_from_identity: bool = False,
    config: Callable[[MosquittoTls], str] | None = None,
) -> MosquittoTls:
    """Put what a TLS broker reads into ``out``; return the settings that name those files.

    ``out`` receives ``ca.pem``, ``broker.pem``, ``broker.key`` (0600, given to ``owner``,
    ``user`` or ``user:group``, if set), ``crl.pem`` and the ``acl`` generated from
    ``registry``, and ``mosquitto.conf`` if ``config`` renders it from the settings (it is
    rendered before anything is written, so a refused configuration writes nothing).
    ``paths_as`` is ``out`` as the broker sees it (e.g. in a container). Both
    ``roadwave pki broker-config`` and the pipeline's own broker are configured by this.

    Raises:
        PkiError: ``broker`` has no valid broker certificate, or its key was made
            elsewhere, or ``owner`` cannot be given the key.
        MosquittoConfigError: a path that cannot go into a Mosquitto configuration.
    """
    pki.check_identity(pki.BROKER, broker)
    record = next(
        (r for r in fleet_pki.certificates() if r.identity == broker and r.status() == "valid"), None
    )
    if record is None or record.role != pki.BROKER:
        raise pki.PkiError(
            f"no valid broker certificate for {broker!r}: issue one with "
            f"`roadwave pki issue --dir {fleet_pki.directory} --role broker {broker}`"
        )
    bundle = fleet_pki.bundle(broker)
    if bundle.key_file is None:
        raise pki.PkiError(
            f"the key of {broker!r} was made elsewhere (issued from a request): "
            "write the configuration where the key is, or issue the broker's certificate here"
        )
    seen = paths_as if paths_as is not None else out.resolve()
    tls = MosquittoTls(
        ca_file=seen / "ca.pem",
        cert_file=seen / "broker.pem",
        key_file=seen / "broker.key",
        crl_file=seen / "crl.pem",
        acl_file=seen / "acl",
        client_id_from_identity=client_id_from_identity,
    )
    config_text = None if config is None else config(tls)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fleet_pki.ca_file, out / "ca.pem")
    shutil.copyfile(bundle.cert_file, out / "broker.pem")
    shutil.copyfile(fleet_pki.crl_file, out / "crl.pem")
    pki.write_file_atomically(out / "broker.key", bundle.key_file.read_bytes(), 0o600)
    if owner:
        user, _, group = owner.partition(":")
        try:
            shutil.chown(out / "broker.key", user, group or None)
        except (LookupError, PermissionError) as exc:
            raise pki.PkiError(f"owner {owner!r}: cannot give it the broker's key ({exc})") from exc
    write_acl(registry, out / "acl")
    if config_text is not None:
        pki.write_file_atomically(out / "mosquitto.conf", config_text.encode(), 0o644)
    return tls


def _config_value(name: str, value: str) -> str:
    """A value for a ``key value`` line: one line, no surrounding blanks (Mosquitto trims them)."""
    if not value or value != value.strip() or any(char in value for char in "\r\n\0"):
        raise MosquittoConfigError(
            f"{name} {value!r} cannot be written to a Mosquitto configuration: "
            "it must be one line without leading or trailing blanks"
        )
    return value


def mosquitto_config(
    port: int,
    host: str,
    data_dir: Path,
    *,
    log_file: Path | None = None,
    tls: MosquittoTls | None = None,
    stay_root: bool = False,
) -> str:
    """The text of a Mosquitto 2.x configuration with one listener.

    Without ``tls`` the listener is plain MQTT with anonymous access (tests and the demo
    on loopback only). ``log_file=None`` logs to stderr (for a container; Mosquitto 2.0.11
    does not flush stdout, so a log there arrives late or never). ``stay_root``
    keeps a broker started as root from switching to the ``mosquitto`` user.
    """
    lines = [f"listener {port} {_config_value('host', host)}"]
    lines += tls.config_lines() if tls is not None else ["allow_anonymous true"]
    lines += [
        "persistence true",
        f"persistence_location {_config_value('data_dir', str(data_dir))}{os.sep}",
        "persistence_file mosquitto.db",
        # Consumers acknowledge after their writes are durable: give them a wide
        # window, and queue for offline persistent sessions instead of dropping.
        "max_inflight_messages 1000",
        "max_queued_messages 1000000",
        "set_tcp_nodelay true",
        f"log_dest file {_config_value('log_file', str(log_file))}" if log_file else "log_dest stderr",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if stay_root:
        lines.append("user root")
    return "\n".join(lines) + "\n"


class Mosquitto(_ChildServer):
    """Eclipse Mosquitto 2.x broker with one listener (plain MQTT, or TLS with ``tls``) and persistence."""

    name = "mosquitto"
    package = "mosquitto"
    ready_marker = re.compile(r"mosquitto version \S+ running")

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        tls: MosquittoTls | None = None,
        executable: str = "mosquitto",
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """Describe a broker kept in ``workdir``; ``port=None`` picks a free one at start."""
        super().__init__(workdir, port, host, executable, start_timeout, stop_timeout)
        self.tls = tls

    def reload(self, timeout_s: float = 10.0) -> None:
        """Make the running broker reload its configuration, certificates, CRL and ACL (SIGHUP).

        Returns once the broker logs that it reloads. It does so in its only thread,
        between two rounds of network work, so whatever a client does afterwards meets
        the new files.
        """
        if self._proc is None or not self.running:
            raise ServiceError(f"{self.name} is not running: nothing to reload")
        before = self._read_log().count(_RELOAD_MARKER)
        os.kill(self._proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while self._read_log().count(_RELOAD_MARKER) <= before:
            if time.monotonic() > deadline or not self.running:
                raise ServiceError(
                    f"{self.name} did not reload within {timeout_s:g} s; last lines of "
                    f"{self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _render_config(self) -> str:
        # As root, mosquitto would otherwise switch to the `mosquitto` user,
        # which cannot write to a private working directory.
        return mosquitto_config(
            self.port,
            self._host,
            self.workdir,
            log_file=self.log_path,
            tls=self.tls,
            stay_root=os.geteuid() == 0,
        )

    def _command(self, executable: str) -> list[str]:
        return [executable, "-c", str(self.config_path)]

    def _probe(self) -> bool:
        try:
            with socket.create_connection((self._host, self.port), timeout=1.0):
                return True
        except OSError:
            return False


class InfluxDB1(_ChildServer):
    """InfluxDB 1.x (``influxd``) serving its HTTP API only, without telemetry."""

    name = "influxd"
    package = "influxdb"
    ready_marker = re.compile(r'msg="?Listening on HTTP')

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        executable: str = "influxd",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Describe a server kept in ``workdir``; ``port=None`` picks a free one at start."""
        super().__init__(workdir, port, host, executable, start_timeout, stop_timeout)
        self._rpc_port: int | None = None
        self._version: str | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{_host_port(self._host, self.port)}"

    @property
    def version(self) -> str:
        """Server version from the ``X-Influxdb-Version`` header of ``/ping``."""
        if self._version is None:
            raise ServiceError(f"{self.name} version unknown: call start() first")
        return self._version

    def _assign_ports(self, fresh: bool) -> None:
        super()._assign_ports(fresh)
        if fresh or self._rpc_port is None:
            self._rpc_port = free_port(_RPC_HOST)

    def _render_config(self) -> str:
        assert self._rpc_port is not None

        def quoted(value: object) -> str:  # JSON strings are valid TOML basic strings
            return json.dumps(str(value), ensure_ascii=False)

        inputs = ("graphite", "collectd", "opentsdb", "udp")
        disabled_inputs = "".join(f"[[{section}]]\n  enabled = false\n" for section in inputs)
        return f"""\
# Upstream spells the telemetry switch reporting-disabled, Debian reporting-enabled.
reporting-disabled = true
reporting-enabled = false
bind-address = {quoted(_host_port(_RPC_HOST, self._rpc_port))}

[meta]
  dir = {quoted(self.workdir / "meta")}
  logging-enabled = false

[data]
  dir = {quoted(self.workdir / "data")}
  wal-dir = {quoted(self.workdir / "wal")}
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = {quoted(_host_port(self._host, self.port))}
  log-enabled = false
  unix-socket-enabled = false

[continuous_queries]
  log-enabled = false

[logging]
  format = "logfmt"
  level = "info"
  suppress-logo = true

{disabled_inputs}"""

    def _command(self, executable: str) -> list[str]:
        return [executable, "run", "-config", str(self.config_path)]

    def _child_env(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override the config file.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _probe(self) -> bool:
        try:
            with _http.open(f"{self.url}/ping", timeout=1.0) as response:
                version = response.headers.get("X-Influxdb-Version")
                if response.status != 204 or not version:
                    return False
        except OSError:
            return False
        self._version = version
        return True
