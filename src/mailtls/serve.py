"""``mailtls serve``: one asyncio process running every mail listener and the web/API server.

Wiring only: the store (journal + index), the run manager (binding, authentication, verdicts),
the I/O shell with the protocol cores, and the web app share one event loop. Signals: SIGINT and
SIGTERM shut down cleanly (open mail sessions are told the server is going away, the journal is
synced); SIGHUP reloads the TLS certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
from typing import Any

from mailtls.findings import EXIT_CANNOT_RUN, EXIT_USAGE
from mailtls.settings import Settings

log = logging.getLogger("mailtls.serve")


def _choose_loop(settings: Settings) -> str:
    if settings.event_loop == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if settings.event_loop == "uvloop":
            from mailtls.cli import UserError

            raise UserError("uvloop is not installed (pip install 'mailtls[fast]')") from None
        return "asyncio"
    return "uvloop"


def main(settings: Settings) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loop_kind = _choose_loop(settings)
    if loop_kind == "uvloop":
        import uvloop

        runner: Any = uvloop.run
    else:
        runner = asyncio.run
    try:
        return int(runner(serve(settings, loop_kind)))
    except KeyboardInterrupt:
        return 0


async def serve(settings: Settings, loop_kind: str = "asyncio") -> int:
    import uvicorn

    from mailtls.net.endpoints import RunListeners
    from mailtls.net.listeners import MailServer, raise_nofile_limit
    from mailtls.net.pki import PkiError
    from mailtls.protocols.imap import ImapCore
    from mailtls.protocols.pop3 import Pop3Core
    from mailtls.protocols.smtp import SmtpCore
    from mailtls.retention import prune_periodically
    from mailtls.runs.keys import load_or_create_key
    from mailtls.runs.manager import RunManager
    from mailtls.store import Store
    from mailtls.store.space import check_free_space, watch_free_space
    from mailtls.web.app import create_app
    from mailtls.web.httpguard import guarded_protocol, http_cap

    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile_limit()
    settings = share_descriptors(settings, nofile)
    store = Store(
        data_dir,
        fsync=settings.fsync,
        index_queue=settings.storage.index_queue,
        segment_bytes=settings.storage.segment_mb * 1024 * 1024,
    )
    check_free_space(store, settings.storage.min_free_mb)  # before the first connection
    manager = RunManager(store, settings, load_or_create_key(data_dir))
    manager.load()
    store.subscribe(manager.on_record)
    from mailtls.serve_log import Activity

    activity = Activity(settings.log)
    store.subscribe(activity.on_record)
    try:
        certs, attack_certs = _certificates(settings)
    except PkiError as exc:
        store.close()
        print(f"mailtls: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    server = MailServer(
        settings,
        certs=certs,
        attack_certs=attack_certs,
        binder=manager.binder,
        authenticator=manager.authenticate,
        sink=store.append,
        core_factories={"smtp": SmtpCore, "imap": ImapCore, "pop3": Pop3Core},
        exempt=settings.connections.exempt,
    )
    loop = asyncio.get_running_loop()
    # Kicks happen after the current reply went out (activation is decided inside the store
    # subscriber, mid-reply) and always on the loop thread (API handlers run in a thread pool).
    manager.set_kicker(lambda run_id, why: loop.call_soon_threadsafe(server.kick_run, run_id, why))
    try:
        await server.start()
        http_socket = bind_http(settings)  # before the banner: a busy port is one line
    except OSError as exc:
        await server.close()
        store.close()
        print(f"mailtls: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except PkiError as exc:  # the certificate files do not load
        store.close()
        print(f"mailtls: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    run_listeners = RunListeners(
        server.listener, settings.listen, freebind=settings.endpoints.freebind
    )
    manager.set_endpoint_listeners(run_listeners)
    releaser = asyncio.create_task(_release_periodically(manager))
    try:
        dns = await _start_dns(settings, manager)
    except OSError as exc:
        run_listeners.close_all()
        await server.close()
        store.close()
        print(f"mailtls: error: cannot answer DNS: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN

    app = create_app(settings, manager, store, mail_server=server)
    config = uvicorn.Config(
        http_cap(app, settings),
        host=settings.listen[0],
        port=settings.ports.http,
        log_level="warning",
        lifespan="off",
        loop="none",
        access_log=False,
        server_header=False,
        http=guarded_protocol(settings),
        timeout_keep_alive=int(settings.web.idle_seconds),
    )
    web = uvicorn.Server(config)
    # this process owns SIGINT/SIGTERM/SIGHUP (below); uvicorn must not capture them
    web.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def reload_tls() -> None:
        try:
            server.reload_tls()
            log.info("TLS certificate reloaded")
        except Exception:  # the old certificate stays in use
            log.exception("TLS reload failed; keeping the previous certificate")

    loop.add_signal_handler(signal.SIGHUP, reload_tls)
    pruner = asyncio.create_task(prune_periodically(store, settings.retention_days))
    floor = asyncio.create_task(
        watch_free_space(store, settings.storage.min_free_mb, settings.storage.check_seconds)
    )
    web_task = asyncio.create_task(web.serve(sockets=[http_socket]))
    status_task = asyncio.create_task(activity.report_every(lambda: server.open_connections))
    await asyncio.sleep(0)
    _print_banner(settings, server, certs, loop_kind)
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({web_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    pruner.cancel()
    status_task.cancel()
    floor.cancel()
    releaser.cancel()
    manager.set_endpoint_listeners(None)
    run_listeners.close_all()
    if dns is not None:
        dns.close()
    await server.close()
    web.should_exit = True
    if not web_task.done():
        await web_task
    store.close()
    if web_task in done and web_task.exception() is not None:
        log.error("web server failed: %s", web_task.exception())
        return 1
    return 0


def bind_http(settings: Settings) -> socket.socket:
    """The web app's listening socket, bound here so that a busy port fails before anything
    is announced (uvicorn would log it from a task, as a traceback)."""
    host, port = settings.listen[0], settings.ports.http
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{exc.strerror} (web app on {host}:{port})") from None
    return sock


def share_descriptors(settings: Settings, nofile: int) -> Settings:
    """Size the mail and web connection caps so that both fit under the open-file limit with
    ``connections.fd_reserve`` to spare: a saturated web side never starves the mail listeners
    of descriptors, nor the reverse. The runs' own listening sockets (``endpoints``) come off
    the budget first."""
    mail, web = settings.connections.total, settings.web.total
    ep = settings.endpoints
    listeners = ep.max_runs * 6 * (1 if ep.prefix else len(settings.listen)) if ep.enabled else 0
    budget = max(2, nofile - settings.connections.fd_reserve - listeners)
    if mail + web > budget:
        web = max(1, min(web, budget // 4))
        mail = max(1, budget - web)
        log.info(
            "open-file limit %d: mail connections capped at %d, web connections at %d",
            nofile,
            mail,
            web,
        )
        settings = dataclasses.replace(
            settings,
            connections=dataclasses.replace(settings.connections, total=mail),
            web=dataclasses.replace(settings.web, total=web),
        )
    log.info("open-file limit %d: up to %d mail and %d web connections", nofile, mail, web)
    return settings


RELEASE_EVERY = 5.0  # seconds between looks for runs whose endpoints go back to the pool


async def _start_dns(settings: Settings, manager: Any) -> Any:
    """The zone's authoritative responder (``[dns]`` with ``endpoints.zone``), or None."""
    if not settings.dns.port:
        return None
    from mailtls.dnszone import Zone, ZoneConfig
    from mailtls.net.dns import DnsResponder

    zone = Zone(ZoneConfig.from_settings(settings), manager.endpoints_by_label)
    responder = DnsResponder(
        zone.respond,
        settings.dns.listen or settings.listen,
        settings.dns.port,
        queries_per_second=settings.dns.queries_per_second,
        tcp_connections=settings.dns.tcp_connections,
        ipv6_prefix=settings.binding.ipv6_prefix,
    )
    await responder.start()
    return responder


async def _release_periodically(manager: Any) -> None:
    while True:
        await asyncio.sleep(RELEASE_EVERY)
        try:
            manager.release_endpoints()
        except Exception:  # the next round tries again
            log.exception("releasing run endpoints failed")


def _certificates(settings: Settings) -> tuple[Any, Any]:
    """The server certificates and the attack certificates of the ``cert_*`` test cases. When
    the test CA is created (first start, or an old chain replaced) its key is kept just long
    enough to issue the expired and wrong-host certificates from it (so that their only defect is
    the one the case is about), then it is deleted unless ``tls.keep_ca_key``."""
    from mailtls.net.attack_certs import ensure_attack_certificates
    from mailtls.net.pki import ensure_certificates

    tls_dir = settings.data_dir / "tls"
    # a CA created now (a fresh folder, or an old chain replaced) keeps its key until the
    # attack certificates are issued
    issuing = dataclasses.replace(settings, tls=dataclasses.replace(settings.tls, keep_ca_key=True))
    certs = ensure_certificates(issuing if not settings.tls.cert_file else settings)
    try:
        attack = ensure_attack_certificates(certs, tls_dir / "ca.key")
    finally:
        if not settings.tls.keep_ca_key and (tls_dir / "ca.key").is_file():
            (tls_dir / "ca.key").unlink()
            log.info("deleted the test CA key (tls.keep_ca_key is off)")
    return certs, attack


def _print_banner(settings: Settings, server: Any, certs: Any, loop_kind: str) -> None:
    lines = [f"mailtls serving (event loop: {loop_kind}, data: {settings.data_dir})"]
    for line in server.addresses():
        lines.append(f"  {line}")
    ep = settings.endpoints
    if ep.enabled and ep.prefix:
        lines.append(f"  run endpoints  an address of {ep.prefix} and <label>.{ep.zone} per run")
    elif ep.enabled:
        lines.append(
            f"  run endpoints  ports {ep.port_first}-{ep.port_last} (up to {ep.max_runs} runs)"
        )
    else:
        lines.append("  run endpoints  off: connections are bound by client address")
    if settings.dns.port:
        where = ", ".join(settings.dns.listen or settings.listen)
        lines.append(f"  DNS          {ep.zone} on {where} port {settings.dns.port} (UDP, TCP)")
    lines.append(f"  web + API    {settings.http_url}/  (OpenAPI: {settings.http_url}/api/docs)")
    ca = getattr(certs, "ca", None)
    if ca:
        lines.append(f"  trust this CA to test with verification: {ca}")
    print("\n".join(lines), file=sys.stderr, flush=True)
