"""The node's Prometheus scrape target, served by skyge-emon (port 9664, ha_cluster_exporter's).

Each scrape asks the node's daemons over their local sockets (a second at most each) and reads
their processes, so the figures are current and no daemon carries a metrics server of its own.
A daemon that does not answer leaves its metrics out and shows `skyge_daemon_up 0`.

Names follow Prometheus conventions (base units, `_total` counters) and mirror
ha_cluster_exporter's where the meaning is the same (quorate, members, resources, fail counts).
With TLS files the endpoint is HTTPS and requires a client certificate of the cluster CA
(`skyge ca issue --admin prometheus` for the scraper), like every other port of the node.
"""
from __future__ import annotations

import logging
import socketserver
import ssl
import threading
from wsgiref.simple_server import WSGIRequestHandler
from typing import Any
from collections.abc import Callable, Iterator

import grpc
import psutil
from prometheus_client import make_wsgi_app
from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily,
                                    Metric)
from prometheus_client.exposition import ThreadingWSGIServer

from skyge import __version__
from skyge.services.common.paths import DAEMONS, NodePaths
from skyge.services.common.tls import TlsFiles
from skyge.v1 import (bus_pb2, bus_pb2_grpc, ha_pb2, ha_pb2_grpc, heartbeat_pb2,
                      heartbeat_pb2_grpc, lock_pb2, lock_pb2_grpc)

METRICS_PORT = 9664
ASK_TIMEOUT_S = 1.0

logger = logging.getLogger("skyge.emon.metrics")


class NodeCollector:
    """prometheus_client collector: the node's figures, gathered at each scrape."""

    def __init__(self, paths: NodePaths) -> None:
        self.paths = paths

    def _ask(self, daemon: str, call: Callable[[grpc.Channel], Any]) -> Any:
        try:
            with grpc.insecure_channel(f"unix:{self.paths.socket(daemon)}") as channel:
                return call(channel)
        except grpc.RpcError:
            return None

    def collect(self) -> Iterator[Metric]:
        yield from self._daemons()
        yield from self._membership()
        yield from self._locks()
        yield from self._services()
        yield from self._buses()

    def _daemons(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("skyge_daemon_up", "1 when the daemon's process runs",
                               labels=["daemon"])
        cpu = CounterMetricFamily("skyge_daemon_cpu_seconds", "CPU time of the daemon's process",
                                  labels=["daemon"])
        memory = GaugeMetricFamily("skyge_daemon_resident_memory_bytes",
                                   "resident memory of the daemon's process", labels=["daemon"])
        for daemon in DAEMONS:
            try:
                process = psutil.Process(int(self.paths.pid_file(daemon).read_text().split()[0]))
                times, rss = process.cpu_times(), process.memory_info().rss
            except (OSError, ValueError, IndexError, psutil.Error):
                up.add_metric([daemon], 0)
                continue
            up.add_metric([daemon], 1)
            cpu.add_metric([daemon], times.user + times.system)
            memory.add_metric([daemon], rss)
        info = GaugeMetricFamily("skyge_build_info", "the running skyge version",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield from (up, cpu, memory, info)

    def _membership(self) -> Iterator[Metric]:
        def ask(channel: grpc.Channel) -> tuple[Any, Any]:
            stub = heartbeat_pb2_grpc.HeartbeatStub(channel)
            return (stub.ListMembers(heartbeat_pb2.ListMembersRequest(), timeout=ASK_TIMEOUT_S),
                    stub.ListLinks(heartbeat_pb2.ListLinksRequest(), timeout=ASK_TIMEOUT_S))
        answer = self._ask("heartbeat", ask)
        if answer is None:
            return
        members, links = answer
        count = GaugeMetricFamily("skyge_members", "nodes in this node's membership view (itself "
                                  "included)")
        count.add_metric([], len(members.members))
        up = GaugeMetricFamily("skyge_link_up", "1 when the heartbeat link to the peer on the "
                               "path is up", labels=["peer", "path"])
        rtt = GaugeMetricFamily("skyge_link_rtt_seconds", "heartbeat round-trip time",
                                labels=["peer", "path"])
        loss = GaugeMetricFamily("skyge_link_loss_ratio", "heartbeat datagrams lost recently, "
                                 "0 to 1", labels=["peer", "path"])
        for link in links.links:
            labels = [str(link.peer_domain), str(link.path)]
            up.add_metric(labels, 1 if link.state == heartbeat_pb2.LINK_UP else 0)
            rtt.add_metric(labels, link.rtt_ms / 1000)
            loss.add_metric(labels, link.loss_percent / 100)
        yield from (count, up, rtt, loss)

    def _locks(self) -> Iterator[Metric]:
        info = self._ask("lock", lambda channel: lock_pb2_grpc.LockStub(channel).GetAuthority(
            lock_pb2.GetAuthorityRequest(), timeout=ASK_TIMEOUT_S))
        if info is None:
            return
        quorate = GaugeMetricFamily("skyge_quorate", "1 when this node's partition may grant "
                                    "locks (ha_cluster_corosync_quorate)")
        quorate.add_metric([], 1 if info.has_quorum else 0)
        authority = GaugeMetricFamily("skyge_lock_authority_domain", "the node deciding lock "
                                      "grants, 0 when there is none")
        authority.add_metric([], info.authority.domain)
        term = GaugeMetricFamily("skyge_lock_term", "lock authority term (grows at each new "
                                 "authority)")
        term.add_metric([], info.term)
        expected = GaugeMetricFamily("skyge_expected_votes", "nodes the quorum is computed over")
        expected.add_metric([], info.expected_votes)
        yield from (quorate, authority, term, expected)

    def _services(self) -> Iterator[Metric]:
        status = self._ask("ha", lambda channel: ha_pb2_grpc.HaStub(channel).Status(
            ha_pb2.StatusRequest(), timeout=ASK_TIMEOUT_S))
        if status is None:
            return
        labels = ["service", "type", "slot"]
        state = GaugeMetricFamily("skyge_service", "a service's state and the node running it "
                                  "(ha_cluster_pacemaker_resources)", labels=[*labels, "state",
                                                                              "node"])
        fails = GaugeMetricFamily("skyge_service_fail_count", "failures counted for the service "
                                  "(ha_cluster_pacemaker_fail_count)", labels=labels)
        waiting = GaugeMetricFamily("skyge_service_waiting_nodes", "nodes queued to take the "
                                    "service over", labels=labels)
        last_start = GaugeMetricFamily("skyge_service_last_start_seconds", "the last start of "
                                       "the service on the node: lock grant to running (the "
                                       "part of a failover the HA daemon controls)",
                                       labels=[*labels, "node"])
        unmanaged = GaugeMetricFamily("skyge_service_unmanaged", "1 while the node is in "
                                      "maintenance: nothing started, stopped or moved there",
                                      labels=[*labels, "node"])
        maintenance = GaugeMetricFamily("skyge_node_maintenance", "1 while the node is in "
                                        "maintenance (ha_cluster_pacemaker_nodes maintenance)",
                                        labels=["node"])
        for domain in status.maintenance_domains:
            maintenance.add_metric([str(domain)], 1)
        for service in status.services:
            key = [service.name, ha_pb2.TakeoverOrder.Name(service.type).removeprefix(
                "TAKEOVER_").lower(), str(service.slot)]
            state.add_metric([*key, ha_pb2.ServiceState.Name(service.state).removeprefix(
                "SERVICE_").lower(), str(service.active_domain)], 1)
            fails.add_metric(key, service.fail_count)
            waiting.add_metric(key, len(service.waiting_domains))
            for node in service.nodes:
                if node.last_start_ms:
                    last_start.add_metric([*key, str(node.domain)], node.last_start_ms / 1000)
                unmanaged.add_metric([*key, str(node.domain)], int(node.unmanaged))
        yield from (state, fails, waiting, last_start, unmanaged, maintenance)

    def _buses(self) -> Iterator[Metric]:
        def ask(channel: grpc.Channel) -> Any:
            identity = self._ask("heartbeat", lambda c: heartbeat_pb2_grpc.HeartbeatStub(
                c).GetIdentity(heartbeat_pb2.GetIdentityRequest(), timeout=ASK_TIMEOUT_S))
            domain = identity.node.domain if identity is not None else 0
            return bus_pb2_grpc.BusStub(channel).ListBuses(bus_pb2.ListBusesRequest(
                domain=domain), timeout=ASK_TIMEOUT_S)
        listed = self._ask("bus", ask)
        if listed is None:
            return
        retained = GaugeMetricFamily("skyge_bus_retained_messages", "messages a bus this node "
                                     "owns keeps for late subscribers (its queue depth)",
                                     labels=["bus"])
        subscribers = GaugeMetricFamily("skyge_bus_subscribers", "subscribers of a bus this "
                                        "node owns", labels=["bus"])
        published = CounterMetricFamily("skyge_bus_published_messages", "messages published "
                                        "on a bus this node owns", labels=["bus"])
        missed = CounterMetricFamily("skyge_bus_missed_messages", "messages subscribers of a "
                                     "bus this node owns skipped because they fell behind its "
                                     "retained window (the bus's drops)", labels=["bus"])
        for bus in listed.buses:
            depth = bus.last_sequence - bus.oldest_sequence + 1 if bus.last_sequence else 0
            retained.add_metric([bus.name], max(depth, 0))
            subscribers.add_metric([bus.name], bus.subscribers)
            published.add_metric([bus.name], bus.published)
            missed.add_metric([bus.name], bus.missed)
        yield from (retained, subscribers, published, missed)


class _Server(ThreadingWSGIServer):
    """prometheus_client's threaded WSGI server, minus the reverse DNS lookup of the address
    that http.server does at bind (in a lab namespace, or on a node without DNS, it waits for
    resolvers outside)."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Quiet(WSGIRequestHandler):
    timeout = 10  # s: a client that stalls (mid-handshake too) is dropped, never waited on

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news."""


class MetricsServer:
    """The HTTP(S) endpoint: one listener per address, stopped with the daemon."""

    def __init__(self, paths: NodePaths, addresses: list[str], tls: bool) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(paths))
        self.addresses, self.paths, self.tls = addresses, paths, tls
        self._servers: list[tuple[Any, threading.Thread]] = []

    def start(self) -> None:
        context = None
        if self.tls:
            files = TlsFiles.default(self.paths)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(files.cert, files.key)
            context.load_verify_locations(files.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        app = make_wsgi_app(self.registry)
        for address in self.addresses:
            host, _, port = address.rpartition(":")
            server = _Server((host.strip("[]"), int(port)), _Quiet)
            server.set_app(app)
            if context is not None:
                # the handshake happens in the request's own thread: a stranger that stalls in it
                # holds up no other scrape
                server.socket = context.wrap_socket(server.socket, server_side=True,
                                                    do_handshake_on_connect=False)
            thread = threading.Thread(target=server.serve_forever, name=f"metrics {address}",
                                      daemon=True)
            thread.start()
            self._servers.append((server, thread))

    def stop(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(5)
        self._servers.clear()
