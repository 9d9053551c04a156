"""HA resources on the lab, inside the nodes' own namespaces: a floating IP with its label is
reachable from the client, gratuitous ARP moves the client's neighbour entry when the IP moves
from n1 to n2, removal makes it unreachable; a loop-device store mounts on n1 only (not on n2,
not on the host) with its mode and owner, refuses a busy unmount clearly, and unmounts.

Code runs inside a node through `node.run([python, -c, ...])` (the node's network and mount
namespaces). Every wait is bounded; loop devices made here are detached by their own name.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest

from skyge.clients.lab import LabHost
from skyge.services.ha.resources import store as store_mod
from skyge.services.ha.service_config import FloatingIp, Store

pytestmark = pytest.mark.lab

VIP = "192.168.1.100"
FIP = FloatingIp("eth0", VIP, "255.255.255.0", "192.168.1.255", "eth0:1024")

# runs inside a node: argv[1] = action, argv[2] = JSON of the resource; prints one JSON line
NODE_CODE = r'''
import asyncio, json, sys, time
from skyge.services.ha.service_config import FloatingIp, Store
from skyge.services.ha.resources import fip, garp, store
action, arg = sys.argv[1], json.loads(sys.argv[2])
out = {}
if action == "fip-add-sync":
    f = FloatingIp(**arg)
    out["added"] = fip.add_sync(f)
    out["again"] = fip.add_sync(f)
    out["garp_frames"] = garp.send_garp(f.nic, f.ip)
    out["present"] = fip.present_sync(f)
    out["labels"] = fip.labels(f.nic)
elif action == "fip-add-async":
    f = FloatingIp(**arg)
    async def main():
        t = time.perf_counter()
        added = await fip.add(f)
        frames = await garp.announce(f.nic, f.ip)
        return {"added": added, "garp_frames": frames, "ms": (time.perf_counter() - t) * 1e3,
                "present": await fip.present(f), "again": await fip.add(f)}
    out = asyncio.run(main())
    out["labels"] = fip.labels(f.nic)
elif action == "fip-remove":
    f = FloatingIp(**arg)
    out["removed"] = fip.remove_sync(f)
    out["again"] = fip.remove_sync(f)
    out["present"] = fip.present_sync(f)
elif action == "fip-remove-async":
    f = FloatingIp(**arg)
    async def main():
        return {"removed": await fip.remove(f), "again": await fip.remove(f),
                "present": await fip.present(f)}
    out = asyncio.run(main())
elif action == "mac":
    out["mac"] = garp.nic_mac(arg)
elif action == "mount":
    s = Store(**arg)
    out["mounted_now"] = store.mount(s)
    out["again"] = store.mount(s)
    out["mounted"] = store.mounted(s)
elif action == "mounted":
    out["mounted"] = store.mounted(Store(**arg))
elif action == "unmount":
    s = Store(**arg.pop("store"))
    try:
        out["unmounted"] = asyncio.run(store.unmount_async(s, **arg))
    except store.StoreError as error:
        out["error"] = str(error)
    out["mounted"] = store.mounted(s)
print(json.dumps(out))
'''


def in_node(node: LabHost, action: str, arg: Any) -> dict[str, Any]:
    done = node.run([sys.executable, "-c", NODE_CODE, action, json.dumps(arg)], timeout=60)
    assert done.returncode == 0, f"{node.key} {action}: {done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def ping(host: LabHost, ip: str, deadline: float = 3.0) -> bool:
    """Does `ip` answer a ping from `host` within `deadline` s (retrying while ARP resolves)?"""
    end = time.monotonic() + deadline
    while True:
        if host.run(["ping", "-q", "-n", "-c", "1", "-W", "0.3", ip], timeout=10).returncode == 0:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def neighbour_mac(host: LabHost, ip: str) -> str | None:
    done = host.run(["ip", "-j", "neigh", "show", ip, "dev", "eth0"], check=True)
    entries = json.loads(done.stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def addr_lines(host: LabHost) -> str:
    return host.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], check=True).stdout


def fip_arg() -> dict[str, str]:
    return {"nic": FIP.nic, "ip": FIP.ip, "netmask": FIP.netmask, "broadcast": FIP.broadcast,
            "label": FIP.label}


def test_floating_ip_moves_with_gratuitous_arp(make_lab):
    lab = make_lab(2)
    n1, n2, client = lab.node(1), lab.node(2), lab.client
    assert in_node(n1, "mac", "eth0")["mac"] == n1.mac("eth0")

    # up on n1: labelled, broadcast set, reachable from the client
    up = in_node(n1, "fip-add-sync", fip_arg())
    assert up["added"] is True and up["again"] is False and up["present"] is True
    assert up["garp_frames"] == 6 and up["labels"][VIP] == "eth0:1024"
    line = next(text for text in addr_lines(n1).splitlines() if f"{VIP}/24" in text)
    assert "brd 192.168.1.255" in line and "eth0:1024" in line
    assert ping(client, VIP)
    assert neighbour_mac(client, VIP) == n1.mac("eth0")

    # move to n2 (async API, as the daemon does): the client's entry follows at once, no ping
    down = in_node(n1, "fip-remove", fip_arg())
    assert down == {"removed": True, "again": False, "present": False}
    moved = in_node(n2, "fip-add-async", fip_arg())
    assert moved["added"] is True and moved["again"] is False and moved["present"] is True
    assert moved["garp_frames"] == 6 and moved["labels"][VIP] == "eth0:1024"
    deadline = time.monotonic() + 1.0
    while neighbour_mac(client, VIP) != n2.mac("eth0") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert neighbour_mac(client, VIP) == n2.mac("eth0")
    assert ping(client, VIP)
    assert VIP not in addr_lines(n1) and VIP in addr_lines(n2)

    # removed everywhere: unreachable
    gone = in_node(n2, "fip-remove-async", fip_arg())
    assert gone == {"removed": True, "again": False, "present": False}
    assert not ping(client, VIP, deadline=1.0)


@pytest.fixture
def loop_device(tmp_path):
    """A 32 MiB ext4 image on a loop device (the lab's shared disk); detached afterwards."""
    for tool in ("losetup", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    image = tmp_path / "shared.img"
    with open(image, "wb") as disk:
        disk.truncate(32 << 20)
    made = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                          text=True, timeout=30)
    if made.returncode != 0:
        pytest.skip(f"no loop device: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True, capture_output=True,
                       timeout=60)
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)


def test_store_mounts_on_one_node_only(make_lab, loop_device):
    lab = make_lab(2)
    n1, n2 = lab.node(1), lab.node(2)
    mountpoint = lab.root / "shared" / "data"
    store = {"array_ip": "", "device": loop_device, "mountpoint": str(mountpoint),
             "mode": 0o750, "user": "nobody", "group": "nogroup"}
    the_store = Store(**store)

    result = in_node(n1, "mount", store)
    assert result == {"mounted_now": True, "again": False, "mounted": True}
    stat = n1.run(["stat", "-c", "%a %U %G", str(mountpoint)], check=True).stdout.split()
    assert stat == ["750", "nobody", "nogroup"]
    n1.run(["sh", "-c", f"echo hello > {mountpoint}/on-disk"], check=True)

    # only n1 sees it: not n2, not the machine itself
    assert in_node(n2, "mounted", store) == {"mounted": False}
    assert n2.run(["test", "-e", f"{mountpoint}/on-disk"]).returncode != 0
    assert not store_mod.mounted(the_store)
    assert not (mountpoint / "on-disk").exists()

    # busy: a clear error naming the user; then force kills it and unmounts
    # (nsenter --wd would pick the folder before entering the mount namespace: cd inside)
    ready = lab.root / "busy-ready"
    n1.spawn(["sh", "-c", f"cd {mountpoint} && touch {ready} && exec sleep 60"], name="busy")
    deadline = time.monotonic() + 5
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = in_node(n1, "unmount", {"store": store})
    assert "busy" in busy["error"] and "(sleep)" in busy["error"] and busy["mounted"] is True
    assert str(mountpoint) in busy["error"] and 'umount = "force"' in busy["error"]
    forced = in_node(n1, "unmount", {"store": store, "mode": "force", "kill_wait": 1.0})
    assert forced == {"unmounted": True, "mounted": False}
    assert in_node(n1, "unmount", {"store": store}) == {"unmounted": False, "mounted": False}

    # the data is on the shared disk: n2 can mount it now and finds it
    assert in_node(n2, "mount", store)["mounted_now"] is True
    assert n2.run(["cat", f"{mountpoint}/on-disk"], check=True).stdout == "hello\n"
    assert in_node(n2, "unmount", {"store": store}) == {"unmounted": True, "mounted": False}
