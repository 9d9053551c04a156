"""Hostile input, property-based (hypothesis): the heartbeat and lock datagram decoders, the
config parser and service.cfg loading take any bytes or text and either accept it or refuse it
with their own error; nothing else ever escapes (a daemon never dies on bad input).

Each property runs a bounded number of examples (FUZZ_EXAMPLES), derived both from nothing
(random bytes and text) and from valid inputs mutated byte by byte, so the decoders are driven
past their first checks. `bench.hostile_input` does the same to live daemons on the lab.
"""
from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyge.services.common.config import ConfigError, parse_config
from skyge.services.common.runner import config_schema
from skyge.services.ha.service_config import parse_service
from skyge.services.heartbeat import wire
from skyge.services.heartbeat.core import HeartbeatConfig, HeartbeatCore, PathConfig
from skyge.services.heartbeat.daemon import SPEC as HEARTBEAT
from skyge.services.lock.links import Links
from skyge.services.lock.protocol import MS, MemoryStore, Node
from skyge.v1 import lock_peer_pb2 as pp
from tests.unit.lock_timing import COMPACT
from tests.unit.test_heartbeat_wire import KEY, NETID, announces, heartbeat, publications

FUZZ_EXAMPLES = int(os.environ.get("SKYGE_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    """A valid input with a few bytes replaced, inserted or cut off."""
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(("replace", "insert", "cut")))
        if action == "replace" and data:
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[where:]
    return bytes(data)


HEARTBEAT_CORPUS = [heartbeat(None), heartbeat(None, echo_domain=0), *announces(
    publications(3), key=None), *announces(publications(40, value_bytes=40), key=None)[:2]]


@FUZZ
@given(st.one_of(st.binary(max_size=1500), mutated(HEARTBEAT_CORPUS)))
def test_heartbeat_datagrams_decode_or_are_refused_with_a_reason(data):
    for key in (None, KEY):
        try:
            wire.decode(data, key, NETID)
        except wire.WireError as error:
            assert error.reason in wire.REASONS


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=600), mutated(HEARTBEAT_CORPUS)), max_size=20))
def test_the_heartbeat_core_counts_hostile_datagrams_and_keeps_going(datagrams):
    core = HeartbeatCore(HeartbeatConfig(NETID, 1, {1: PathConfig("eth0", ("10.0.0.1",))}),
                         incarnation=1, now_ns=0)
    now = 0
    for data in datagrams:
        now += MS
        core.receive(1, data, "10.0.0.9", now)
        core.tick(now)
        core.outgoing(now)
    assert {m.node.domain for m in core.members()} <= set(range(1, 65))


def _lock_corpus() -> list[bytes]:
    """Datagrams of two lock nodes electing and taking a lock, as sent."""
    nodes = [Node(d, 1, netid=7, store=MemoryStore(), expected_nodes=2, timing=COMPACT)
             for d in (1, 2)]
    links = [Links(n) for n in nodes]
    for node in nodes:
        node.on_view({1, 2}, 0)
    corpus, now = [], 0
    for step in range(200):
        now += MS
        for node in nodes:
            node.tick(now)
        if step == 60:
            for node in nodes:
                node.open_session(1, "fuzz", 0, now)
            nodes[1].acquire(1, (5, 9), now)
            nodes[0].acquire(1, (5, 9), now)
            nodes[1].acquire(1, "leader-group", now)
        if step == 120:
            nodes[1].release(1, (5, 9), now)
        for source, target in ((0, 1), (1, 0)):
            for outgoing in links[source].flush(now):
                data = outgoing.datagram.SerializeToString()
                corpus.append(data)
                links[target].receive(pp.PeerDatagram.FromString(data), now)
    return corpus


LOCK_CORPUS = _lock_corpus()


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=600), mutated(LOCK_CORPUS)), min_size=1,
                max_size=12))
def test_lock_datagrams_that_parse_never_break_a_node(datagrams):
    node = Node(1, 1, netid=7, store=MemoryStore(), expected_nodes=2, timing=COMPACT)
    node.on_view({1, 2}, 0)
    links, now = Links(node), 0
    for data in datagrams:
        now += MS
        try:
            datagram = pp.PeerDatagram.FromString(data)
        except Exception:
            continue
        datagram.netid, datagram.to_domain = 7, 1  # past the address checks, into the node
        datagram.from_domain = datagram.from_domain % 64 + 1
        links.receive(datagram, now)
        node.tick(now)
        links.flush(now)
        node.take_outputs()


CONFIG_TEXT = st.text(alphabet='abcdeklnorstuy_0123456789=:;,."\'\\{}[]()#/* \n\t-+xLe',
                      max_size=300)
SEED_SERVICE = ('name = "mysql";\nonstart = "yes";\nscript = "/etc/init.d/mysqld";\n'
                'fip = "eth0-192.168.1.100-255.255.255.0-192.168.1.255:";\ncheck_interval = 5;\n')


@FUZZ
@given(st.one_of(CONFIG_TEXT, st.text(max_size=200)))
def test_config_text_parses_or_is_refused_naming_the_line(text):
    try:
        settings_ = parse_config(text, "fuzz.cfg")
    except ConfigError as error:
        assert "fuzz.cfg" in str(error)
        return
    try:
        config_schema(HEARTBEAT).validate(settings_, "fuzz.cfg")
    except ConfigError as error:
        assert "fuzz.cfg" in str(error)


@FUZZ
@given(st.one_of(CONFIG_TEXT, mutated([SEED_SERVICE.encode()]).map(
    lambda b: b.decode("utf-8", errors="replace"))))
def test_service_cfg_loads_or_is_refused_with_a_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_service(text, "fifo", 0, "/etc/skyge/ha/slots/fifo/0/service.cfg")
