"""The one daemon runner behind all five skyge daemons.

A daemon is a `DaemonSpec`: its name, default TCP port, config keys, extra command-line options
and a `build` function that turns a `DaemonContext` into a `DaemonApp` (the daemon's core plus its
thin gRPC servicers). Everything else is here, identical for every daemon:

- command line in the seed's style: `-d` background, `-t console|syslog|bus|all`, `-l LOG_*`, plus
  `-r ROOT` (node root), `-c FILE` (config) and `--listen HOST:PORT|none` (TCP for peers; by
  default the node's heartbeat-path addresses, not every address);
- config in libconfig syntax at ROOT/etc/skyge/NAME.cfg, errors naming file, line, key, allowed
  values;
- one copy per node: an exclusive lock on ROOT/run/skyge/NAME.pid, taken before the Unix socket is
  touched (gRPC would otherwise silently take the socket path over from a running daemon);
- gRPC on the Unix socket ROOT/run/skyge/NAME.sock (mode 0600, root only) and on TCP, with the
  standard health service (grpc.health.v1) reporting SERVING once the daemon is ready;
- clean shutdown on SIGTERM/SIGINT; systemd READY/WATCHDOG/STOPPING notifications; with `-d` the
  foreground process exits 0 only once the background daemon is serving (or 1 with its error).

Exit status: 0 clean stop, 1 runtime failure (e.g. already running), 2 bad command line or config.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import grpc
import psutil
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from skyge import __version__
from skyge.services.common import access, sdnotify
from skyge.services.common.config import (ConfigError, Field, Schema, boolean, load_config,
                                          parse_config, string)
from skyge.services.common.logsetup import LOG_TYPES, SYSLOG_LEVELS, setup_logging
from skyge.services.common.paths import TCP_PORTS, NodePaths
from skyge.services.common.tls import Credentials, TlsError, TlsFiles

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
READY_TIMEOUT_S = 60.0  # how long `-d` waits for the background daemon to be serving
SHUTDOWN_GRACE_S = 1.0  # in-flight RPCs get this long to finish on SIGTERM
#: a stop still running this long (then twice as long, ...) is logged with where it waits
STOP_REPORT_S = 5.0


@dataclass
class DaemonContext:
    """What a daemon's `build` gets: who it is, where its files are, its config and logger."""

    name: str
    paths: NodePaths
    config: dict[str, Any]
    args: argparse.Namespace
    logger: logging.Logger
    started_unix_ns: int
    #: this node's certificate for TCP (served and dialled), None when it has none (insecure)
    tls: Credentials | None = None
    #: the config file the daemon read (and reads again on SIGHUP)
    config_path: Path | None = None

    def configured_domain(self) -> int:
        """This node's domain: the daemon's own `domain` key, else heartbeat.cfg's, else 0.

        Daemons other than heartbeat learn it from the membership once the heartbeat daemon
        answers; this is what they can know before that (and what they check it against).
        """
        if self.config.get("domain"):
            return int(self.config["domain"])
        path = self.paths.config_file("heartbeat")
        try:
            settings = parse_config(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError, ConfigError):
            return 0
        for setting in settings:
            if setting.key == "domain" and isinstance(setting.value, int) and \
                    1 <= setting.value <= 64:
                return setting.value
        return 0


class DaemonApp:
    """A daemon's core and servicers as the runner sees them; subclasses override what they
    need."""

    #: full gRPC service names (e.g. "skyge.v1.Heartbeat") reported by the health service
    service_names: tuple[str, ...] = ()

    def register(self, server: grpc.aio.Server) -> None:
        """Add the daemon's servicers to the server (before it starts)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start background work (sockets, timers); the daemon is ready when this returns."""

    async def stop(self) -> None:
        """Stop background work; called once on shutdown, before the gRPC server stops."""

    async def reload(self, config: dict[str, Any]) -> None:
        """SIGHUP (`systemctl reload`): apply what can change without a restart from the config
        file as it is now. Raise ConfigError to keep the running settings (the runner logs it)."""
        logging.getLogger(f"skyge.{type(self).__name__}").info("SIGHUP: nothing to reload")

    def healthy(self) -> bool:
        """False makes the runner withhold the systemd watchdog ping and report NOT_SERVING."""
        return True


@dataclass(frozen=True)
class DaemonSpec:
    """Everything that differs between daemons, as far as the runner is concerned."""

    name: str
    description: str
    build: Callable[[DaemonContext], DaemonApp]
    config_fields: tuple[Field, ...] = ()
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: default TCP port when the daemon is not one of the node's (TCP_PORTS)
    port: int | None = None

    @property
    def tcp_port(self) -> int:
        """The daemon's default TCP port for peers (one table for daemons and clients)."""
        return self.port or TCP_PORTS[self.name]


class StartupError(Exception):
    """The daemon cannot start; the message says why (shown to the user, exit status 1)."""


def parse_listen(value: str) -> str | None:
    """Validate a TCP listen address `HOST:PORT` (or `[v6]:PORT`); "none" turns TCP off."""
    if value == "none":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f'must be HOST:PORT with PORT from 1 to 65535, or "none"; got {value!r}')
    return value


def _build_parser(spec: DaemonSpec) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"skyge-{spec.name}", description=spec.description)
    parser.add_argument("-d", "--background", action="store_true",
                        help="run in the background (daemonize); returns once serving")
    parser.add_argument("-t", "--log-type", choices=LOG_TYPES, default="console",
                        help="where log records go (default: console)")
    parser.add_argument("-l", "--log-level", choices=list(SYSLOG_LEVELS), default="LOG_INFO",
                        metavar="LEVEL",
                        help="LOG_EMERG, LOG_ALERT, LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, "
                             "LOG_INFO or LOG_DEBUG (default: LOG_INFO)")
    parser.add_argument("-r", "--root", default=os.environ.get("SKYGE_ROOT", "/"),
                        help="node root folder; all paths live under it "
                             "(default: / or $SKYGE_ROOT)")
    parser.add_argument("-c", "--config", help="config file (default: ROOT/etc/skyge/NAME.cfg)")
    parser.add_argument("--listen", help=f"TCP address for peers, HOST:PORT or none (default: "
                                         f"config 'listen', else port {spec.tcp_port} on the "
                                         f"addresses of heartbeat.cfg's NICs)")
    if spec.add_arguments:
        spec.add_arguments(parser)
    return parser


def config_schema(spec: DaemonSpec) -> Schema:
    """The keys of a daemon's config file: the runner's (`listen`, TLS files, `insecure`) plus
    the spec's own (also used by config CLIs)."""
    listen = Field("listen", string(r"none|.+:\d{1,5}", 'HOST:PORT or "none"'), default="",
                   help=f"TCP address served to peers (default: port {spec.tcp_port} on the "
                        f"addresses of heartbeat.cfg's NICs, else 0.0.0.0)")
    tls = [Field(f"tls_{part}", string(r".+", "a file name"), default="",
                 help=f"{what} (default: ROOT/etc/skyge/tls/{default})")
           for part, what, default in (("ca", "the cluster CA's certificate", "ca.crt"),
                                       ("cert", "this node's certificate", "node.crt"),
                                       ("key", "this node's private key", "node.key"))]
    insecure = Field("insecure", boolean, default=False,
                     help="yes: run without TLS certificates and cluster key (anyone who reaches "
                          "the node then drives the cluster)")
    return Schema([listen, *tls, insecure, *spec.config_fields])


def heartbeat_addresses(paths: NodePaths) -> list[str]:
    """The IPv4 addresses of the NICs heartbeat.cfg names (netcard1..8), in path order."""
    path = paths.config_file("heartbeat")
    try:
        settings = {s.key: s.value for s in parse_config(path.read_text(), str(path))}
    except (OSError, UnicodeDecodeError, ConfigError):
        return []
    nics = [settings[f"netcard{n}"] for n in range(1, 9)
            if isinstance(settings.get(f"netcard{n}"), str)]
    found = psutil.net_if_addrs()
    return [a.address for nic in nics for a in found.get(nic, ())
            if a.family == socket.AF_INET]


def listen_addresses(port: int, paths: NodePaths, configured: str) -> list[str]:
    """Where TCP is served: the configured address, else the port on the heartbeat paths'
    addresses (peers reach a node there; nothing else needs the port), else everywhere."""
    if configured:
        return [configured]
    addresses = heartbeat_addresses(paths)
    return [f"{a}:{port}" for a in addresses] or [f"0.0.0.0:{port}"]


def load_tls(spec: DaemonSpec, paths: NodePaths, config: dict[str, Any], listen: list[str] | None,
             logger: logging.Logger) -> Credentials | None:
    """The node's TLS credentials; StartupError when TCP would be served without them and the
    config does not say `insecure = yes` (then a warning at every start)."""
    files = TlsFiles.configured(paths, config)
    if files.present():
        try:
            return Credentials.load(files)
        except TlsError as error:
            raise StartupError(str(error)) from None
    if listen is None:
        return None
    if not config["insecure"]:
        raise StartupError(f"no TLS certificate at {files.cert}: every TCP port needs one, so "
                           f"that only the cluster's nodes drive the cluster (make it with "
                           f"`skyge ca issue`, see the README), or listen = \"none\", or set "
                           f"insecure = yes in {spec.name}.cfg")
    logger.warning("insecure = yes: TCP %s is served without TLS; anyone who reaches it drives "
                   "the cluster", ", ".join(listen))
    return None


class _PidLock:
    """The one-copy-per-node guard: an flock on the pid file, held for the daemon's life."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(f"already running on this node (pid {holder}, lock "
                                   f"{self.path}); stop it first") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self.fd)
            self.fd = None


async def _serve(spec: DaemonSpec, ctx: DaemonContext, listen: list[str] | None,
                 on_ready: Callable[[str | None], None]) -> int:
    """Serve until SIGTERM/SIGINT. `on_ready(None)` once serving, `on_ready(error)` on failure."""
    logger = ctx.logger
    socket_path = ctx.paths.socket(spec.name)
    app = spec.build(ctx)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # (grpc-stubs' health.pyi lacks the asyncio servicer that grpc_health.v1.health exports)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", *app.service_names):  # until app.start() is done (not NOT_FOUND)
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    app.register(server)
    _reflect(app, server)
    if socket_path.exists() or socket_path.is_symlink():
        socket_path.unlink()  # safe: we hold the pid lock, so no live daemon owns it
    server.add_insecure_port(f"unix:{socket_path}")
    for address in listen or ():
        try:
            if ctx.tls is not None:
                server.add_secure_port(address, ctx.tls.server())
            else:
                server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on TCP {address}: {exc}") from None
    await server.start()
    os.chmod(socket_path, 0o600)
    reader = await _serve_readers(spec, ctx, app, health_servicer)
    try:
        await app.start()
    except BaseException:
        # the servers go before the loop does (else grpc's finalizers complain after the
        # daemon's own error); the error itself is the caller's to report
        if reader is not None:
            await reader.stop(None)
        await server.stop(None)
        raise
    for service in ("", *app.service_names):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = asyncio.create_task(_reload(spec, ctx, app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    watchdog = asyncio.create_task(_watchdog(app, health_servicer, stop))
    logger.log(25, "serving on %s%s (skyge %s)", socket_path,
               f" and tcp {', '.join(listen)} "
               f"({'TLS as ' + str(ctx.tls.identity) if ctx.tls else 'no TLS'})"
               if listen else "", __version__)
    sdnotify.notify(f"READY=1\nSTATUS=serving on {socket_path}")
    on_ready(None)

    await stop.wait()
    logger.log(25, "stopping")
    sdnotify.notify("STOPPING=1")
    watchdog.cancel()
    for task in reloads:
        task.cancel()
    await asyncio.gather(watchdog, *reloads, return_exceptions=True)
    await health_servicer.enter_graceful_shutdown()
    await _stop_reporting(app, logger)
    if reader is not None:
        await reader.stop(SHUTDOWN_GRACE_S)
    await server.stop(SHUTDOWN_GRACE_S)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    logger.log(25, "stopped")
    return EXIT_OK


async def _stop_reporting(app: DaemonApp, logger: logging.Logger) -> None:
    """`app.stop()`; while it runs longer than STOP_REPORT_S (then 2x, 4x...), log where it waits,
    so that a stop that hangs says why (a daemon may legitimately take long: HA stops services)."""
    coroutine = app.stop()
    stopping = asyncio.create_task(coroutine, name="stop")
    started, wait_s = time.monotonic(), STOP_REPORT_S
    while not (await asyncio.wait({stopping}, timeout=wait_s))[0]:
        logger.warning("still stopping after %.0f s, waiting in: %s",
                       time.monotonic() - started, " > ".join(_awaiting(coroutine)))
        wait_s *= 2
    stopping.result()


def _awaiting(coroutine: Any) -> list[str]:
    """Where a suspended coroutine waits: each coroutine it awaits, outermost first."""
    found = []
    while getattr(coroutine, "cr_frame", None) is not None:
        frame = coroutine.cr_frame
        found.append(f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:"
                     f"{frame.f_lineno})")
        coroutine = coroutine.cr_await
    return found


def _reflect(app: DaemonApp, server: grpc.aio.Server) -> None:
    """Server reflection, so grpcurl, Postman and other generic clients need no .proto files."""
    reflection.enable_server_reflection(
        (*app.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)


async def _serve_readers(spec: DaemonSpec, ctx: DaemonContext, app: DaemonApp,
                         health_servicer: Any) -> grpc.aio.Server | None:
    """The read-only socket for the `skyge` group (see `access`), when the group exists."""
    gid = access.group_id()
    path = ctx.paths.read_socket(spec.name)
    if path.exists() or path.is_symlink():
        path.unlink()
    if gid is None:
        return None
    server = grpc.aio.server(interceptors=[access.ReadOnly()])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    app.register(server)
    _reflect(app, server)
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    for target, mode in ((path, 0o660), (path.parent, 0o710)):
        os.chown(target, 0, gid)
        os.chmod(target, mode)
    return server


async def _reload(spec: DaemonSpec, ctx: DaemonContext, app: DaemonApp) -> None:
    logger = ctx.logger
    sdnotify.notify("RELOADING=1")
    try:
        path = ctx.config_path or ctx.paths.config_file(spec.name)
        await app.reload(load_config(path, config_schema(spec), missing_ok=True))
    except ConfigError as error:
        logger.error("reload refused, running settings kept: %s", error)
    except Exception:
        logger.exception("reload failed, running settings kept")
    finally:
        sdnotify.notify("READY=1")


async def _watchdog(app: DaemonApp, health_servicer: Any, stop: asyncio.Event) -> None:
    """Ping systemd's watchdog while the app says it is healthy; mirror that in grpc health."""
    interval = sdnotify.watchdog_interval_s() or 1.0
    serving = True
    while not stop.is_set():
        ok = app.healthy()
        if ok:
            sdnotify.notify("WATCHDOG=1")
        if ok != serving:
            serving = ok
            status = (health_pb2.HealthCheckResponse.SERVING if ok
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for service in ("", *app.service_names):
                await health_servicer.set(service, status)
        await asyncio.sleep(interval)


def _daemonize() -> tuple[int, Callable[[str | None], None]]:
    """Fork into the background. Returns (0, report) in the daemon; the parent never returns.

    The parent waits on a pipe for the daemon's first word: it exits 0 once the daemon serves, or
    prints the daemon's startup error and exits 1, so `skyge-heartbeat -d` in a script fails loudly.
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        deadline = time.monotonic() + READY_TIMEOUT_S
        message = b""
        with os.fdopen(read_fd, "rb") as pipe:
            while time.monotonic() < deadline:
                chunk = pipe.read1(4096)
                if not chunk:
                    break
                message += chunk
        text = message.decode(errors="replace").strip()
        if text == "ready":
            os._exit(EXIT_OK)
        sys.stderr.write((text or "daemon exited before it was ready") + "\n")
        os._exit(EXIT_FAILED)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(EXIT_OK)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir("/")

    def report(error: str | None) -> None:
        nonlocal write_fd
        if write_fd < 0:
            return
        try:
            os.write(write_fd, b"ready" if error is None else error.encode())
        finally:
            os.close(write_fd)
            write_fd = -1

    return 0, report


def _no_report(error: str | None) -> None:
    """In the foreground nobody waits for the daemon's first word."""


def run_daemon(spec: DaemonSpec, argv: Sequence[str] | None = None) -> int:
    """Entry point shared by all daemons: parse, validate, (daemonize), serve. Returns the exit
    status."""
    parser = _build_parser(spec)
    args = parser.parse_args(argv)
    paths = NodePaths.at(args.root)
    config_path = Path(args.config) if args.config else paths.config_file(spec.name)
    try:
        config = load_config(config_path, config_schema(spec), missing_ok=args.config is None)
        raw = args.listen or config["listen"]
        configured = parse_listen(raw) if raw else ""
        listen = (None if configured is None
                  else listen_addresses(spec.tcp_port, paths, configured))
    except ConfigError as exc:
        sys.stderr.write(f"skyge-{spec.name}: {exc}\n")
        return EXIT_USAGE
    except ValueError as exc:
        sys.stderr.write(f"skyge-{spec.name}: --listen: {exc}\n")
        return EXIT_USAGE

    report: Callable[[str | None], None] = _no_report
    if args.background:
        _, report = _daemonize()
    os.umask(0o077)
    console_file = paths.log / f"{spec.name}.log" if args.background else None
    logger = setup_logging(spec.name, args.log_type, args.log_level, console_file=console_file,
                           node_root=paths.root)
    lock = _PidLock(paths.pid_file(spec.name))
    try:
        lock.acquire()
        ctx = DaemonContext(spec.name, paths, config, args, logger, time.time_ns(),
                            tls=load_tls(spec, paths, config, listen, logger),
                            config_path=config_path)
        return asyncio.run(_serve(spec, ctx, listen, report))
    except ConfigError as exc:
        message = f"skyge-{spec.name}: {exc}"
        status = EXIT_USAGE
    except StartupError as exc:
        message = f"skyge-{spec.name}: {exc}"
        status = EXIT_FAILED
    except Exception as exc:
        logger.exception("daemon failed")
        message = f"skyge-{spec.name}: failed: {exc}"
        status = EXIT_FAILED
    finally:
        lock.release()
    logger.error("%s", message)
    if not args.background and args.log_type == "syslog":
        sys.stderr.write(message + "\n")  # console logging already showed it otherwise
    report(message)
    return status

