"""The gRPC contracts (protos/skyge/v1): generated code is fresh, every service has the RPCs other
code is written against, unbuilt RPCs answer UNIMPLEMENTED over a real server, messages round-trip,
and every element of the .proto files carries the comment other-language clients read."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, message_factory

from skyge.v1 import (bus_pb2, bus_pb2_grpc, common_pb2, emon_pb2, emon_pb2_grpc, ha_pb2,
                      ha_pb2_grpc, heartbeat_pb2, heartbeat_pb2_grpc, lock_pb2, lock_pb2_grpc,
                      lock_peer_pb2, lock_peer_pb2_grpc)

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
GENERATE = PROTOS / "generate.py"

U, SS, BIDI = "unary", "server_stream", "bidi"
# service -> {rpc: kind}. Other daemons and the CLI are coded against these names.
SERVICES = {
    (heartbeat_pb2, heartbeat_pb2_grpc, "Heartbeat"): {
        "GetIdentity": U, "ListMembers": U, "ListLinks": U, "WatchMembership": SS,
        "PublishName": U, "WithdrawName": U, "LookupName": U, "WatchNames": SS, "GetStats": U,
    },
    (bus_pb2, bus_pb2_grpc, "Bus"): {
        "CreateBus": U, "ListBuses": U, "DeleteBus": U, "InitBuses": U, "Publish": U,
        "PublishStream": BIDI, "RelayPublish": BIDI, "Subscribe": SS,
    },
    (lock_pb2, lock_pb2_grpc, "Lock"): {
        "Session": BIDI, "Inspect": U, "ListLocks": U, "GetAuthority": U,
        "SetExpectedVotes": U, "Campaign": SS, "Observe": SS,
    },
    (lock_peer_pb2, lock_peer_pb2_grpc, "LockPeer"): {"GetPeerState": U},
    (ha_pb2, ha_pb2_grpc, "Ha"): {
        "Query": U, "Status": U, "WatchStatus": SS, "Command": U, "StopAll": U, "Pulse": U,
        "SetRefuseNew": U, "SetMaintenance": U,
    },
    (emon_pb2, emon_pb2_grpc, "Emon"): {
        "ListProbes": U, "GetCurrent": U, "GetHistory": U, "Watch": SS, "ListWatermarks": U,
        "Reload": U, "GetStats": U,
    },
}
SERVICE_IDS = [name for _, _, name in SERVICES]


def kind_of(method) -> str:
    if method.client_streaming and method.server_streaming:
        return BIDI
    if method.server_streaming:
        return SS
    return "client_stream" if method.client_streaming else U


# ---- generated code is fresh

def test_generated_code_is_fresh():
    result = subprocess.run([sys.executable, str(GENERATE), "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"protos/generate.py --check exited {result.returncode}:\n{result.stdout}{result.stderr}")


# ---- services and RPC names

@pytest.mark.parametrize("key", list(SERVICES), ids=SERVICE_IDS)
def test_service_has_the_listed_rpcs(key):
    pb2, pb2_grpc, name = key
    service = pb2.DESCRIPTOR.services_by_name.get(name)
    assert service is not None, f"service {name} missing from {pb2.__name__}"
    assert service.full_name == f"skyge.v1.{name}"
    actual = {m.name: kind_of(m) for m in service.methods}
    assert actual == SERVICES[key]
    # the generated gRPC module exposes the client stub, the servicer and its registration call
    for attribute in (f"{name}Stub", f"{name}Servicer", f"add_{name}Servicer_to_server"):
        assert hasattr(pb2_grpc, attribute), f"{pb2_grpc.__name__}.{attribute} missing"


def test_every_file_is_in_package_skyge_v1_with_client_options():
    for module in (common_pb2, heartbeat_pb2, bus_pb2, lock_pb2, lock_peer_pb2, ha_pb2, emon_pb2):
        file = module.DESCRIPTOR
        assert file.package == "skyge.v1"
        options = file.GetOptions()
        assert options.go_package.endswith("/skyge/v1;skygev1"), file.name
        assert options.java_package == "com.skyge.v1", file.name
        assert options.java_multiple_files, file.name


# ---- enums

def all_enums():
    for module in (common_pb2, heartbeat_pb2, bus_pb2, lock_pb2, lock_peer_pb2, ha_pb2, emon_pb2):
        yield from module.DESCRIPTOR.enum_types_by_name.values()
        for message in module.DESCRIPTOR.message_types_by_name.values():
            yield from message.enum_types


def test_every_enum_has_an_unspecified_zero():
    enums = list(all_enums())
    assert len(enums) >= 10
    for enum in enums:
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), f"{enum.full_name}: 0 is {zero.name}"


def test_log_levels_are_syslog_priorities_plus_one():
    syslog = ["LOG_EMERG", "LOG_ALERT", "LOG_CRIT", "LOG_ERR", "LOG_WARNING", "LOG_NOTICE",
              "LOG_INFO", "LOG_DEBUG"]
    assert [common_pb2.LogLevel.Value(name) - 1 for name in syslog] == list(range(8))
    assert common_pb2.LOG_LEVEL_UNSPECIFIED == 0
    assert (common_pb2.SCOPE_UNSPECIFIED, common_pb2.SCOPE_NODE,
            common_pb2.SCOPE_CLUSTER) == (0, 1, 2)


# ---- UNIMPLEMENTED from the generated base servicers, over a real server

@pytest.fixture
def served():
    """A grpc.server on a temp Unix socket with every generated *base* servicer registered."""
    # a short folder: Unix socket paths are limited to 107 bytes
    with tempfile.TemporaryDirectory(prefix="skyge-t-") as folder:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for _, pb2_grpc, name in SERVICES:
            servicer = getattr(pb2_grpc, f"{name}Servicer")()
            getattr(pb2_grpc, f"add_{name}Servicer_to_server")(servicer, server)
        target = f"unix:{folder}/contracts.sock"
        assert server.add_insecure_port(target)
        server.start()
        try:
            with grpc.insecure_channel(target) as channel:
                yield channel
        finally:
            server.stop(grace=None).wait()


def test_heartbeat_get_identity_is_unimplemented(served):
    stub = heartbeat_pb2_grpc.HeartbeatStub(served)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetIdentity(heartbeat_pb2.GetIdentityRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


ALL_METHODS = [(pb2, name, method) for pb2, _, name in SERVICES
               for method in pb2.DESCRIPTOR.services_by_name[name].methods]


@pytest.mark.parametrize("pb2,service,method", ALL_METHODS,
                         ids=[f"{s}.{m.name}" for _, s, m in ALL_METHODS])
def test_every_rpc_of_a_base_servicer_answers_unimplemented(served, pb2, service, method):
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/skyge.v1.{service}/{method.name}"
    kwargs = dict(request_serializer=request_class.SerializeToString,
                  response_deserializer=response_class.FromString)
    with pytest.raises(grpc.RpcError) as caught:
        if method.client_streaming:
            call = served.stream_stream(path, **kwargs)(iter([request_class()]), timeout=10)
            list(call)
        elif method.server_streaming:
            list(served.unary_stream(path, **kwargs)(request_class(), timeout=10))
        else:
            served.unary_unary(path, **kwargs)(request_class(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---- round trips

def round_trip(message):
    copy = type(message).FromString(message.SerializeToString())
    assert copy == message
    return copy


def test_lock_session_messages_round_trip():
    request = round_trip(lock_pb2.SessionRequest(
        acquire=lock_pb2.Acquire(slot=1536, lock=8191, timeout_ms=600_000, priority=-5)))
    assert request.WhichOneof("request") == "acquire"
    acquire = request.acquire
    assert (acquire.slot, acquire.lock, acquire.priority) == (1536, 8191, -5)
    event = round_trip(lock_pb2.SessionEvent(
        lost=lock_pb2.Lost(slot=512, lock=1, reason=lock_pb2.LOST_NO_QUORUM, detail="minority")))
    assert event.WhichOneof("event") == "lost"
    assert event.lost.reason == lock_pb2.LOST_NO_QUORUM


def test_membership_event_round_trips():
    member = heartbeat_pb2.Member(
        node=common_pb2.NodeId(netid=1000, domain=3), incarnation=2**63 + 7, local=False,
        paths=[heartbeat_pb2.PeerPath(path=1, nic="eth0", addresses=["192.168.1.3"], up=True),
               heartbeat_pb2.PeerPath(path=2, nic="eth1", addresses=["10.0.0.3"], up=False)],
        joined_unix_ns=1_700_000_000_123_456_789, grpc_ports={"bus": 7411})
    event = round_trip(heartbeat_pb2.MembershipEvent(
        view_id=4, time_unix_ns=1_700_000_000_200_000_000,
        left=heartbeat_pb2.MemberLeft(member=member, reason=heartbeat_pb2.LEAVE_FAILED)))
    assert event.WhichOneof("event") == "left"
    assert event.left.member.paths[1].up is False
    assert event.left.member.incarnation == 2**63 + 7
    snapshot = round_trip(heartbeat_pb2.MembershipEvent(
        view_id=1, snapshot=heartbeat_pb2.MembershipView(view_id=1, members=[member])))
    assert snapshot.WhichOneof("event") == "snapshot"


def test_service_config_and_log_record_round_trip():
    config = round_trip(ha_pb2.ServiceConfig(
        type=ha_pb2.TAKEOVER_FIFO, slot=0, name="mysql", script="/etc/init.d/mysqld",
        fips=[ha_pb2.FloatingIp(nic="eth0", ip="192.168.1.100", netmask="255.255.255.0",
                                broadcast="192.168.1.255", label="eth0:8200")],
        stores=[ha_pb2.Store(array_ip="192.168.1.253", device="/dev/sdb1",
                             mountpoint="/var/lib/mysql", mode=0o755, user="mysql",
                             group="mysql")],
        start_timeout_s=30, stop_timeout_s=30, onstart=True, check_interval_s=5,
        check_failures=1))
    assert config.stores[0].mode == 0o755
    record = round_trip(common_pb2.LogRecord(
        node=common_pb2.NodeId(netid=1, domain=64), daemon="ha", level=common_pb2.LOG_DEBUG,
        time_unix_ns=1, message="started", fields={"service": "mysql", "slot": "0"}))
    assert dict(record.fields) == {"service": "mysql", "slot": "0"}
    delivery = round_trip(bus_pb2.Delivery(missed=3, messages=[bus_pb2.BusMessage(
        sequence=10, sender_domain=2, data=b"Hello\x00", content_type="text/plain")]))
    assert delivery.messages[0].data == b"Hello\x00"


def test_optional_filters_distinguish_unset_from_zero():
    unset = heartbeat_pb2.LookupNameRequest()
    zero = round_trip(heartbeat_pb2.LookupNameRequest(type=0, instance=0))
    assert not unset.HasField("type") and not unset.HasField("instance")
    assert zero.HasField("type") and zero.HasField("instance")
    assert lock_pb2.ListLocksRequest(slot=0).HasField("slot")


# ---- documentation: every element of every .proto is commented

def documented_elements():
    """(element description, has comment) for every message, field, enum, value, service, RPC."""
    with tempfile.TemporaryDirectory(prefix="skyge-desc-") as folder:
        out = Path(folder) / "set.pb"
        import grpc_tools
        include = Path(grpc_tools.__file__).parent / "_proto"
        protos = sorted(p.relative_to(PROTOS).as_posix()
                        for p in (PROTOS / "skyge" / "v1").glob("*.proto"))
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{include}",
             "--include_source_info", f"--descriptor_set_out={out}", *protos],
            capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    for file in files:
        comments = {tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
                    for loc in file.source_code_info.location}

        def element(path, what, comments=comments):
            return what, bool(comments.get(tuple(path)))

        def message(path, msg, prefix):
            yield element(path, f"message {prefix}{msg.name}")
            for i, field in enumerate(msg.field):
                yield element([*path, 2, i], f"field {prefix}{msg.name}.{field.name}")
            for i, nested in enumerate(msg.nested_type):
                if not nested.options.map_entry:
                    yield from message([*path, 3, i], nested, f"{prefix}{msg.name}.")
            for i, enum_type in enumerate(msg.enum_type):
                yield from enum([*path, 4, i], enum_type, f"{prefix}{msg.name}.")

        def enum(path, enum_type, prefix):
            yield element(path, f"enum {prefix}{enum_type.name}")
            for i, value in enumerate(enum_type.value):
                yield element([*path, 2, i], f"enum value {value.name}")

        for i, msg in enumerate(file.message_type):
            yield from message([4, i], msg, "")
        for i, enum_type in enumerate(file.enum_type):
            yield from enum([5, i], enum_type, "")
        for i, service in enumerate(file.service):
            yield element([6, i], f"service {service.name}")
            for j, method in enumerate(service.method):
                yield element([6, i, 2, j], f"rpc {service.name}.{method.name}")


def test_every_proto_element_has_a_comment():
    elements = list(documented_elements())
    assert len(elements) > 300
    undocumented = [what for what, ok in elements if not ok]
    assert not undocumented, "no comment on: " + ", ".join(undocumented)
