"""The virtual cluster lab: N skyge nodes on one machine, in network namespaces.

Used by the multi-node tests, the benchmarks and the demo (``skyge lab ...``)::

    from skyge.clients.lab import Lab

    with Lab.up(nodes=3, name="demo") as lab:
        n1, n2 = lab.node(1), lab.node(2)
        n1.spawn(["skyge-heartbeat", "-r", str(n1.root)], name="heartbeat")
        n2.cut("eth0")                         # pull a cable
        lab.partition([[1], [2, 3]])           # split both networks
        n1.set_loss("eth1", 20, "out")         # 20 % loss on n1's private cable, outbound only
        n2.freeze(); n2.thaw()                 # SIGSTOP / SIGCONT the node's processes
        n2.kill("heartbeat")                   # kill -9 one daemon
        n2.crash(); n2.boot()                  # power off / on

Everything stays inside the lab's own namespaces; see `cluster` for the design and `_net` for
the address plan. `configs` writes the nodes' config files (heartbeat.cfg, lock.cfg, service.cfg
...), `daemons` starts skyge's daemons on them, `demo` is `skyge demo`.
"""
from skyge.clients.lab._net import (CLIENT_IP, GATEWAY_IPS, MAX_NODES, NICS, PRIVATE_NET,
                                    PUBLIC_NET, private_ip, public_ip)
from skyge.clients.lab._state import LAB_ROOT
from skyge.clients.lab.cluster import (DEFAULT_NAME, Lab, LabHost, LabNode, LinkState,
                                       ProcessInfo, cleanup_stale, destroy, known_labs,
                                       owned_labs, validate_name)
from skyge.clients.lab.errors import LabError

__all__ = [
    "CLIENT_IP", "DEFAULT_NAME", "GATEWAY_IPS", "LAB_ROOT", "MAX_NODES", "NICS", "PRIVATE_NET",
    "PUBLIC_NET", "Lab", "LabError", "LabHost", "LabNode", "LinkState", "ProcessInfo",
    "cleanup_stale", "destroy", "known_labs", "owned_labs", "private_ip", "public_ip",
    "validate_name",
]
