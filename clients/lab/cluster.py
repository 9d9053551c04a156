"""The virtual cluster: `Lab` (the whole lab), `LabNode` (a node), `LabHost` (gateway, client).

Layout of a lab called ``L`` with N nodes (addresses: see `skyge.clients.lab._net`)::

    L-n1 .. L-nN            L-gw                 L-cl
    eth0  eth1              eth0                 eth0
     |     |                 |                    |
   n1e0  n1e1  ...          gw                   cl        <- switch-side veth ends
     |     |                 |                    |
  [ pub ][ priv ]  bridges in namespace L-sw (never in the host's namespace)

Each host (node, gateway, client) has a network namespace, a root folder
``/run/skyge-lab/L/<host>/`` (``etc/``, ``run/``, ``var/lib/``, ``var/log/``) and a *holder*: a
``sleep`` process (``argv[0]`` = ``skyge-lab-holder:L:<host>``) that owns the host's private mount
namespace. Every process started through the lab joins the host's network namespace (by its
name) and the holder's mount namespace (``nsenter``), so mounts are per host, as on real machines,
and invisible to the host machine. A host's processes are all processes whose network namespace is
the host's, or whose mount namespace is the holder's.

Faults, all reversible and all confined to the lab:

- ``cut(nic)`` / ``restore(nic)``: the switch-side end of the cable goes down / up; the node sees
  NO-CARRIER, like a pulled cable.
- ``Lab.partition(groups)`` / ``Lab.heal()``: the groups' switch ports move to per-group bridges
  (``pub{g}``, ``priv{g}``) on both networks; the gateway and client stay with one chosen group.
- ``set_loss(nic, percent, direction, peer=)``: random loss on a cable, per direction (so it can
  be asymmetric), optionally only toward one peer. It is an nftables ``numgen random`` drop rule
  in the *switch* (bridge family, forward hook) rather than iptables in the node, because a DROP in
  a node's own OUTPUT chain makes ``sendto()`` fail with EPERM, which a lossy cable never does;
  in the switch the loss is silent, hits every protocol (ARP too) and leaves the node's own
  netfilter tables to the daemons.
- ``freeze()`` / ``thaw()``: SIGSTOP / SIGCONT to every process of the host (not the holder).
- ``kill(pid or spawned name, sig=SIGKILL)``.
- ``LabNode.crash()``: switch ports down, every process (holder included) SIGKILLed, addresses
  flushed; ``boot()``: ``run/`` emptied (it is a tmpfs on real machines), netfilter emptied, base
  addresses and routes back, a new holder (so a fresh mount namespace), ports up unless cut.
  Cuts, partitions and loss rules are properties of the cables and switch: they survive a crash.

State shared between processes lives in ``/run/skyge-lab/L/state.json`` (see `_state`), so
``Lab.attach(L)`` from any process (the CLI) sees and drives the same lab. ``destroy(L)`` and
``cleanup_stale()`` remove a lab, or the leftovers of a crashed run, by namespace name and holder
marker even when the state file is gone. All waits are bounded; processes are signalled by PID
through pidfds, never by name.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence

from skyge.clients.lab import _net, _process, _state
from skyge.clients.lab._net import (BRIDGES, CLIENT_HOST_NUMBER, CLIENT_IP, GATEWAY_HOST_NUMBER,
                                    GATEWAY_IPS, MAX_NODES, NICS, PREFIX_LEN, nic_index,
                                    private_ip, public_ip)
from skyge.clients.lab._state import LAB_ROOT, lab_dir
from skyge.clients.lab.errors import LabError

DEFAULT_NAME = "skyge"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
NETNS_PATTERN = re.compile(r"^(?P<lab>[a-z][a-z0-9_]{0,15})-(?P<host>sw|gw|cl|n[1-9][0-9]?)$")
HOLDER_MARK = "skyge-lab-holder"
#: seconds to wait for holders to be ready, for killed processes to exit, for processes to stop
READY_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0
NFT_TABLE = "skyge_lab"
SWITCH = "sw"
GATEWAY = "gw"
CLIENT = "cl"
DIRECTIONS = ("both", "in", "out")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise LabError(f"bad lab name {name!r}: use 1-16 characters a-z, 0-9 or _, "
                       "starting with a letter")
    return name


def _netns(lab: str, key: str) -> str:
    return f"{lab}-{key}"


def _holder_mark(lab: str, key: str) -> str:
    return f"{HOLDER_MARK}:{lab}:{key}"


def _is_holder(pid: int, lab: str, key: str) -> bool:
    argv = _process.cmdline(pid)
    return bool(argv) and argv[0] == _holder_mark(lab, key)


@dataclass(frozen=True)
class ProcessInfo:
    """One process of a lab host."""

    pid: int
    #: state letter from /proc/PID/stat: R running, S sleeping, T stopped (frozen), Z zombie...
    state: str
    #: kernel command name (/proc/PID/comm)
    comm: str
    cmdline: tuple[str, ...]
    #: the name given to `spawn()`, or None for processes not started by `spawn()`
    name: str | None


@dataclass(frozen=True)
class LinkState:
    """One NIC of a host as the switch sees it."""

    nic: str
    #: switch-side port (veth end) name in the switch namespace
    port: str
    #: bridge the port is attached to (``pub``/``priv``, or ``pub{g}``/``priv{g}`` when partitioned)
    bridge: str | None
    #: True when the switch-side port is administratively up
    up: bool
    #: True when the port was cut with `cut()` (it stays down until `restore()`)
    cut: bool


class LabHost:
    """A host of the lab with its own namespaces: the gateway, the client, or a node."""

    def __init__(self, lab: Lab, key: str) -> None:
        self.lab = lab
        #: host name in the lab: ``n1``..``nN``, ``gw`` or ``cl``
        self.key = key
        #: name of the network namespace (``ip netns``)
        self.netns = _netns(lab.name, key)
        #: root folder of this host (pass it as ``--root`` / $SKYGE_ROOT to skyge daemons and CLI)
        self.root = lab_dir(lab.name) / key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.lab.name}/{self.key}>"

    # -- addressing ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.key

    @property
    def nics(self) -> tuple[str, ...]:
        return ("eth0",)

    @property
    def host_number(self) -> int:
        return GATEWAY_HOST_NUMBER if self.key == GATEWAY else CLIENT_HOST_NUMBER

    def addresses(self, nic: str = "eth0") -> tuple[str, ...]:
        """The host's base IPv4 addresses on *nic* (without prefix length)."""
        self._check_nic(nic)
        return GATEWAY_IPS if self.key == GATEWAY else (CLIENT_IP,)

    def address(self, nic: str = "eth0") -> str:
        """The host's (first) base address on *nic*."""
        return self.addresses(nic)[0]

    def mac(self, nic: str = "eth0") -> str:
        return _net.mac(self.host_number, nic_index(self._check_nic(nic)))

    def port(self, nic: str = "eth0") -> str:
        """Name of the switch-side end of this host's cable on *nic*."""
        self._check_nic(nic)
        return self.key

    def _check_nic(self, nic: str) -> str:
        if nic not in self.nics:
            raise LabError(f"{self.key} has no NIC {nic!r} (it has {', '.join(self.nics)})")
        return nic

    # -- state ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        data = _state.read(self.lab.name)
        if data is None:
            raise LabError(f"lab {self.lab.name!r} is not up")
        return data

    @property
    def crashed(self) -> bool:
        return self.key in self._state()["crashed"]

    @property
    def frozen(self) -> bool:
        return self.key in self._state()["frozen"]

    @property
    def holder_pid(self) -> int | None:
        """PID of the process owning this host's mount namespace (None while crashed)."""
        pid = self._state()["holders"].get(self.key)
        return int(pid) if pid is not None else None

    def _holder(self) -> int:
        """The holder's PID; LabError when the node is crashed (or being crashed) or broken.
        (Takes the lab's lock when the holder is gone: never call it under `_state.mutate`.)"""
        data = self._state()
        if self.key in data["crashed"]:
            raise LabError(f"{self.key} is crashed: boot it first")
        pid = data["holders"].get(self.key)
        if pid is None or not _is_holder(pid, self.lab.name, self.key):
            with _state.locked(self.lab.name):  # a crash under way (a fence) holds the lock
                after = _state.read(self.lab.name)
            if after is not None and self.key in after["crashed"]:
                raise LabError(f"{self.key} is crashed: boot it first")
            raise LabError(f"{self.key}: its namespace holder (pid {pid}) is gone; "
                           f"the lab is broken, take it down and up again")
        return int(pid)

    # -- processes ------------------------------------------------------------------------------
    def command(self, argv: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> list[str]:
        """The full command line that runs *argv* inside this host (for your own subprocess calls).

        It enters the host's network namespace by name (so it can never land in the machine's
        own network) and the holder's mount namespace; the working directory is *cwd* (default:
        the host's root folder).
        """
        if isinstance(argv, (str, bytes)) or not argv:
            raise LabError(f"{self.key}: the command must be a non-empty list of arguments, "
                           f"got {argv!r}")
        holder = self._holder()
        return ["nsenter", f"--net=/run/netns/{self.netns}", f"--mount=/proc/{holder}/ns/mnt",
                f"--wd={os.fspath(cwd) if cwd is not None else self.root}", "--",
                *[os.fspath(a) for a in argv]]

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for processes of this host: the caller's, plus SKYGE_ROOT (the host's root),
        SKYGE_LAB, SKYGE_LAB_HOST, plus *env*."""
        merged = dict(os.environ)
        merged.update(SKYGE_ROOT=str(self.root), SKYGE_LAB=self.lab.name, SKYGE_LAB_HOST=self.key)
        merged.update(env or {})
        return merged

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
            input: str | None = None, env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a short command in this host and wait for it (output captured as text).

        Raises LabError when it takes longer than *timeout* seconds (it is then killed), or when
        *check* is true and it exits non-zero.
        """
        cmd = self.command(argv, cwd)
        try:
            done = subprocess.run(cmd, input=input, capture_output=True, text=True,
                                  timeout=timeout, env=self.environment(env),
                                  stdin=subprocess.DEVNULL if input is None else None)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.key}: {' '.join(map(str, argv))} did not finish within "
                           f"{timeout:g} s") from None
        except FileNotFoundError as error:
            raise LabError(f"{self.key}: cannot run nsenter ({error})") from None
        if check and done.returncode != 0:
            raise LabError(f"{self.key}: {' '.join(map(str, argv))} exited {done.returncode}: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
        return done

    def spawn(self, argv: Sequence[str], *, name: str | None = None,
              env: Mapping[str, str] | None = None, log_path: str | os.PathLike[str] | None = None,
              cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process (a daemon) in this host and return at once.

        stdout and stderr are appended to *log_path* (default ``ROOT/var/log/NAME.log``); stdin is
        /dev/null; the process gets its own session (terminal signals do not reach it). *name*
        (default: the program's base name) lets `kill()` and `processes()` refer to it.
        """
        cmd = self.command(argv, cwd)
        label = name or Path(str(argv[0])).name
        log = Path(log_path) if log_path is not None else self.root / "var" / "log" / f"{label}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink,
                                        stderr=subprocess.STDOUT, env=self.environment(env),
                                        start_new_session=True, close_fds=True)
            except OSError as error:
                raise LabError(f"{self.key}: cannot start {argv[0]}: {error}") from None
        self.lab._children[proc.pid] = proc
        entry = {"pid": proc.pid, "start": _process.start_time(proc.pid), "name": label,
                 "argv": [str(a) for a in argv], "log": str(log)}
        with _state.mutate(self.lab.name) as data:
            records = [r for r in data["spawned"].get(self.key, []) if _record_alive(r)]
            data["spawned"][self.key] = [*records, entry]
        return proc

    def pids(self, include_holder: bool = False) -> list[int]:
        """PIDs of every process of this host (its netns or its mount namespace), sorted."""
        data = self._state()
        found = _scan_hosts(self.lab.name, [self.key], data)[self.key]
        holder = data["holders"].get(self.key)
        return sorted(p for p in found if include_holder or p != holder)

    def processes(self) -> list[ProcessInfo]:
        """The host's processes (holder excluded) with state letter, command and spawn name."""
        data = self._state()
        names = {r["pid"]: r["name"] for r in data["spawned"].get(self.key, []) if _record_alive(r)}
        infos = []
        for pid in self.pids():
            fields = _process.stat_fields(pid)
            if fields is None:
                continue
            infos.append(ProcessInfo(pid, fields[1], fields[0], tuple(_process.cmdline(pid)),
                                     names.get(pid)))
        return infos

    def find(self, name: str) -> list[int]:
        """PIDs of the live processes started by `spawn(..., name=name)`."""
        data = self._state()
        return [r["pid"] for r in data["spawned"].get(self.key, [])
                if r["name"] == name and _record_alive(r)]

    def kill(self, target: int | str, sig: int = signal.SIGKILL, *,
             wait: float | None = None) -> list[int]:
        """Send *sig* to one process (a PID, or every live process spawned under that name).

        For SIGKILL it waits (at most *wait*, default 5 s) until they are gone; pass *wait* to
        wait for other signals too. Returns the PIDs signalled. The holder is refused: use
        `LabNode.crash()` to kill everything.
        """
        data = self._state()
        if isinstance(target, str):
            pids = self.find(target)
            if not pids:
                raise LabError(f"{self.key}: no live process spawned as {target!r}")
        else:
            pids = [int(target)]
            if pids[0] == data["holders"].get(self.key):
                raise LabError(f"{self.key}: pid {target} is the namespace holder; "
                               "crash the node instead")
            if pids[0] not in self.pids():
                raise LabError(f"{self.key}: pid {target} is not a process of this host")
        sent = _process.send(pids, sig, self._owns())
        if wait is None and sig == signal.SIGKILL:
            wait = KILL_TIMEOUT
        if wait:
            left = _process.wait_gone(sent, wait)
            if left:
                raise LabError(f"{self.key}: pid(s) {left} still running {wait:g} s after "
                               f"signal {sig}")
        self.lab._reap()
        return sent

    def _owns(self) -> Callable[[int], bool]:
        """Is a PID (still) a process of this host, holder excluded? (checked after pidfd_open)"""
        data = self._state()
        member = _member_check(*_host_namespaces(self.lab.name, [self.key], data))
        holder = data["holders"].get(self.key)
        return lambda pid: pid != holder and member(pid)

    def freeze(self) -> list[int]:
        """SIGSTOP every process of this host (state T) and return their PIDs.

        Repeats (bounded) until no process of the host is left running, so children forked
        meanwhile are stopped too. Processes started after `freeze()` run normally.
        """
        with _state.mutate(self.lab.name) as data:
            if self.key in data["crashed"]:
                raise LabError(f"{self.key} is crashed: nothing to freeze")
            stopped: set[int] = set()
            owned = self._owns()
            for _ in range(20):
                running = [p for p in self.pids() if _process.state(p) not in ("T", "t", "Z", None)]
                if not running:
                    break
                stopped.update(_process.send(running, signal.SIGSTOP, owned))
                _process.wait_state(running, "Tt", STOP_TIMEOUT)
            else:
                raise LabError(f"{self.key}: processes keep appearing; could not freeze")
            if self.key not in data["frozen"]:
                data["frozen"].append(self.key)
        return sorted(stopped | set(self.pids()))

    def thaw(self) -> list[int]:
        """SIGCONT every process of this host; return their PIDs."""
        with _state.mutate(self.lab.name) as data:
            pids = self.pids()
            sent = _process.send(pids, signal.SIGCONT, self._owns())
            _process.wait_state(sent, "RSDI", STOP_TIMEOUT)
            if self.key in data["frozen"]:
                data["frozen"].remove(self.key)
        return sent

    # -- links ----------------------------------------------------------------------------------
    def cut(self, nic: str = "eth0") -> None:
        """Pull the cable of *nic*: the switch-side end goes down (the host sees NO-CARRIER)."""
        self._check_nic(nic)
        with _state.mutate(self.lab.name) as data:
            cuts = data["cut"].setdefault(self.key, [])
            if nic not in cuts:
                cuts.append(nic)
            if self.key not in data["crashed"]:
                self.lab._switch([f"link set dev {self.port(nic)} down"])

    def restore(self, nic: str = "eth0") -> None:
        """Plug the cable of *nic* back in (no effect on the link while the node is crashed)."""
        self._check_nic(nic)
        with _state.mutate(self.lab.name) as data:
            cuts = data["cut"].get(self.key, [])
            if nic in cuts:
                cuts.remove(nic)
            if self.key not in data["crashed"]:
                self.lab._switch([f"link set dev {self.port(nic)} up"])

    def set_loss(self, nic: str, percent: float, direction: str = "both", *,
                 peer: int | str | LabHost | None = None) -> None:
        """Drop *percent* % of the frames on the cable of *nic*, at random, silently.

        *direction*: ``"in"`` (frames to this host), ``"out"`` (frames from it) or ``"both"``
        (each direction independently, so a ping round trip is lost with 1-(1-p)^2). *peer*
        (node id, ``"n2"``, ``"gw"``, a host) limits the loss to frames between this host and
        that peer. 0 removes the rule. Rules of other directions/peers are kept. ARP frames are
        lost too, as on a bad cable: a path whose MACs are not yet learnt may stall for about a
        second per lost ARP exchange.
        """
        self._check_nic(nic)
        try:
            percent = float(percent)
        except (TypeError, ValueError):
            raise LabError(f"loss percent must be a number from 0 to 100, "
                           f"got {percent!r}") from None
        if not 0.0 <= percent <= 100.0:
            raise LabError(f"loss percent must be from 0 to 100, got {percent:g}")
        if direction not in DIRECTIONS:
            raise LabError(f"loss direction must be one of {', '.join(DIRECTIONS)}, "
                           f"got {direction!r}")
        peer_key = None
        if peer is not None:
            other = peer if isinstance(peer, LabHost) else self.lab.host(peer)
            other._check_nic(nic)
            if other.key == self.key:
                raise LabError(f"{self.key}: a loss peer must be another host")
            peer_key = other.key
        dirs = ("in", "out") if direction == "both" else (direction,)
        with _state.mutate(self.lab.name) as data:
            rules = [r for r in data["loss"]
                     if not (r["host"] == self.key and r["nic"] == nic and r["dir"] in dirs
                             and r["peer"] == peer_key)]
            if percent > 0:
                rules += [{"host": self.key, "nic": nic, "dir": d, "peer": peer_key,
                           "percent": percent} for d in dirs]
            self.lab._apply_loss(rules)
            data["loss"] = rules

    def clear_loss(self, nic: str | None = None) -> None:
        """Remove every loss rule of this host (of one NIC if given)."""
        with _state.mutate(self.lab.name) as data:
            rules = [r for r in data["loss"]
                     if not (r["host"] == self.key and (nic is None or r["nic"] == nic))]
            self.lab._apply_loss(rules)
            data["loss"] = rules

    def links(self) -> dict[str, LinkState]:
        """The state of each NIC's cable as seen at the switch."""
        data = self._state()
        ports = self.lab._ports()
        result = {}
        for nic in self.nics:
            info = ports.get(self.port(nic), {})
            result[nic] = LinkState(nic, self.port(nic), info.get("master"),
                                    "UP" in info.get("flags", []),
                                    nic in data["cut"].get(self.key, []))
        return result


class LabNode(LabHost):
    """Node *id* (``n{id}``, heartbeat domain id): eth0 public, eth1 private."""

    def __init__(self, lab: Lab, node_id: int) -> None:
        super().__init__(lab, f"n{node_id}")
        #: node number 1..N, also the heartbeat domain id
        self.id = node_id

    @property
    def nics(self) -> tuple[str, ...]:
        return NICS

    @property
    def host_number(self) -> int:
        return self.id

    @property
    def public_ip(self) -> str:
        return public_ip(self.id)

    @property
    def private_ip(self) -> str:
        return private_ip(self.id)

    def addresses(self, nic: str = "eth0") -> tuple[str, ...]:
        self._check_nic(nic)
        return (public_ip(self.id),) if nic == "eth0" else (private_ip(self.id),)

    def port(self, nic: str = "eth0") -> str:
        return f"n{self.id}e{nic_index(self._check_nic(nic))}"

    def crash(self) -> None:
        """Power the node off: cables dead, every process (holder too) SIGKILLed, addresses gone.

        Idempotent. Cuts, loss rules and the partition are kept (they belong to the network).
        """
        lab = self.lab
        with _state.mutate(lab.name) as data:
            if self.key in data["crashed"]:
                return
            lab._switch([f"link set dev {self.port(nic)} down" for nic in self.nics])
            left = _kill_hosts(lab.name, [self.key], data)
            if left:
                raise LabError(f"{self.key}: pid(s) {left} survived SIGKILL for "
                               f"{KILL_TIMEOUT:g} s")
            _net.ip_batch([f"addr flush dev {nic}" for nic in self.nics] +
                          [f"link set dev {nic} down" for nic in self.nics],
                          self.netns, what=f"crash {self.key}")
            data["crashed"].append(self.key)
            data["holders"].pop(self.key, None)
            data["spawned"].pop(self.key, None)
            if self.key in data["frozen"]:
                data["frozen"].remove(self.key)
        lab._reap()

    def fence_script_case(self) -> str:
        """This node's branch of the lab fence script (see `Lab.fence_command`)."""
        ports = " ".join(self.port(nic) for nic in self.nics)
        return f'  {self.id}) ports="{ports}"; netns={shlex.quote(self.netns)} ;;'

    def self_crash_command(self) -> str:
        """A shell command that, run inside this node, powers it off as `crash()` does: the lab's
        stand-in for a reboot (HA's ``reboot_command``). The crash spares its own process, which
        exits once the node is down."""
        argv = ["setsid", sys.executable, "-m", "skyge.clients.cli.main", "lab", "crash",
                "--name", self.lab.name, self.key]
        return " ".join(shlex.quote(a) for a in argv)

    def boot(self) -> None:
        """Power a crashed node on: empty ``run/``, empty netfilter, base addresses and routes,
        a new holder (fresh mount namespace), cables up again except the cut ones."""
        lab = self.lab
        with _state.mutate(lab.name) as data:
            if self.key not in data["crashed"]:
                raise LabError(f"{self.key} is running: crash it before booting it")
            run_dir = self.root / "run"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            _net.ip_batch(_host_net_lines(self), self.netns, what=f"boot {self.key}")
            _net.run(["nsenter", f"--net=/run/netns/{self.netns}", "nft", "flush", "ruleset"],
                     what=f"boot {self.key}: empty netfilter", check=False)
            holders = _start_holders(lab, [self.key])
            data["holders"][self.key] = holders[self.key]
            data["crashed"].remove(self.key)
            cut = data["cut"].get(self.key, [])
            ups = [f"link set dev {self.port(nic)} up" for nic in self.nics if nic not in cut]
            if ups:
                lab._switch(ups)


class Lab:
    """A running virtual cluster. Create with `Lab.up()`, re-open with `Lab.attach()`.

    Use as a context manager to take it down on exit, even on exceptions::

        with Lab.up(nodes=3, name="t1") as lab:
            lab.node(1).run(["ping", "-c1", lab.node(2).private_ip], check=True)

    A `Lab` object is not thread-safe; several processes may drive one lab (state is locked).
    """

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        self.name = name
        #: number of nodes
        self.size: int = int(data["nodes"])
        self.nodes: tuple[LabNode, ...] = tuple(LabNode(self, i) for i in range(1, self.size + 1))
        #: the gateway: holds the reference IPs 192.168.1.1 and 192.168.1.254
        self.gateway = LabHost(self, GATEWAY)
        #: a client on the public network (192.168.1.250)
        self.client = LabHost(self, CLIENT)
        self.root: Path = lab_dir(name)
        self._children: dict[int, subprocess.Popen[Any]] = {}

    def __repr__(self) -> str:
        return f"<Lab {self.name} nodes={self.size}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def hosts(self) -> tuple[LabHost, ...]:
        """Every host: the nodes, then the gateway and the client."""
        return (*self.nodes, self.gateway, self.client)

    def node(self, ident: int | str) -> LabNode:
        """Node by number (1..N) or name (``"n1"``/``"1"``)."""
        host = self.host(ident)
        if not isinstance(host, LabNode):
            raise LabError(f"{ident!r} is not a node (nodes are n1..n{self.size})")
        return host

    def host(self, ident: int | str | LabHost) -> LabHost:
        """Host by node number or name: ``n1``..``nN`` (or ``1``..``N``), ``gw``/``gateway``,
        ``cl``/``client``."""
        if isinstance(ident, LabHost):
            return ident
        text = str(ident).strip().lower()
        if text in (GATEWAY, "gateway"):
            return self.gateway
        if text in (CLIENT, "client"):
            return self.client
        number = text[1:] if text.startswith("n") else text
        if number.isdigit() and 1 <= int(number) <= self.size:
            return self.nodes[int(number) - 1]
        raise LabError(f"no host {ident!r} in lab {self.name}: use n1..n{self.size}, gw or cl")

    # -- life cycle -----------------------------------------------------------------------------
    @classmethod
    def up(cls, nodes: int = 3, name: str = DEFAULT_NAME, *, detached: bool = False) -> Lab:
        """Create a lab of *nodes* nodes (1..64) called *name* and return it running.

        Leftovers of an earlier crashed lab of that name are removed first; a live lab of that
        name is an error. Unless *detached*, the lab belongs to this process: `cleanup_stale()`
        may remove it once this process is gone, and it is taken down when Python exits.
        """
        validate_name(name)
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
            raise LabError(f"number of nodes must be 1 to {MAX_NODES}, got {nodes!r}")
        _require_tools()
        existing = _state.read(name)
        if existing is not None and not _is_stale(name, existing):
            raise LabError(f"lab {name!r} is already up; take it down first "
                           f"(skyge lab down --name {name})")
        destroy(name)
        LAB_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        lab_dir(name).mkdir(mode=0o755)
        me = os.getpid()
        data: dict[str, Any] = {
            "version": _state.STATE_VERSION, "name": name, "nodes": nodes, "status": "starting",
            "created": time.time(), "detached": detached,
            "owner": None if detached else {"pid": me, "start": _process.start_time(me)},
            "holders": {}, "crashed": [], "frozen": [], "cut": {}, "loss": [],
            "partition": None, "spawned": {},
        }
        try:
            with _state.locked(name):
                _state.write(name, data)
                lab = cls(name, data)
                lab._build()
                lab._issue_certificates()
                data["holders"] = _start_holders(lab, [h.key for h in lab.hosts])
                data["status"] = "up"
                _state.write(name, data)
        except BaseException:
            destroy(name)
            raise
        if not detached:
            _OWNED.add(name)
        return lab

    @classmethod
    def attach(cls, name: str = DEFAULT_NAME) -> Lab:
        """Re-open a lab that is up (created by this or another process)."""
        validate_name(name)
        data = _state.read(name)
        if data is None or data.get("status") != "up":
            raise LabError(f"lab {name!r} is not up")
        return cls(name, data)

    def save_logs(self, folder: Path) -> None:
        """Copy every host's logs (daemons, service scripts) and the fence log to *folder*/HOST:
        the evidence goes with the lab when it is taken down."""
        folder.mkdir(parents=True, exist_ok=True)
        for host in self.hosts:
            logs = host.root / "var" / "log"
            if logs.is_dir():
                shutil.copytree(logs, folder / host.key, dirs_exist_ok=True)
        if (self.root / "fenced.log").exists():
            shutil.copy2(self.root / "fenced.log", folder / "fenced.log")

    def down(self) -> None:
        """Kill every process of the lab, delete its namespaces (cables and bridges go with them)
        and its folder. Idempotent."""
        destroy(self.name)
        self._reap()
        _OWNED.discard(self.name)

    def _issue_certificates(self) -> None:
        """The lab's cluster CA (in the lab's folder) and a certificate per node (domain = node
        number) and for the gateway (the witness's machine), where the daemons look for them:
        every TCP port of the lab is mutual TLS, as on a real cluster. The client has none."""
        from skyge.services.common import pki
        from skyge.services.common.tls import TLS_FOLDER, Identity
        ca = pki.Authority.create(self.root / "ca", f"skyge lab {self.name}")
        for host in (*self.nodes, self.gateway):
            identity = Identity.node(host.id) if isinstance(host, LabNode) else Identity("witness")
            pki.install(host.root / "etc" / "skyge" / TLS_FOLDER, ca.cert_pem, ca.issue(identity))

    def _build(self) -> None:
        name, sw = self.name, _netns(self.name, SWITCH)
        _net.ip_batch([f"netns add {_netns(name, k)}"
                       for k in (SWITCH, *(h.key for h in self.hosts))],
                      what="creating namespaces")
        for host in self.hosts:
            for sub in ("etc", "run", "var/lib", "var/log"):
                (host.root / sub).mkdir(parents=True, exist_ok=True)
        lines = []
        for bridge in BRIDGES.values():
            lines += [f"link add name {bridge} type bridge mcast_snooping 0",
                      f"link set dev {bridge} up"]
        for host in self.hosts:
            for nic in host.nics:
                k = nic_index(nic)
                lines += [f"link add name {host.port(nic)} address "
                          f"{_net.mac(host.host_number, k, switch_side=True)} type veth peer name "
                          f"{nic} address {host.mac(nic)} netns {host.netns}",
                          f"link set dev {host.port(nic)} master {BRIDGES[nic]} up"]
        _net.ip_batch(lines, sw, what="building the switch")
        _net.ip_batches({h.netns: _host_net_lines(h) for h in self.hosts},
                        what="configuring hosts")

    # -- network faults -------------------------------------------------------------------------
    def fence_command(self) -> str:
        """A lock.cfg `fence_command` that powers node n$SKYGE_FENCE_DOMAIN off, as a power
        switch would: its cables go dead and every process of it is SIGKILLed within a few ms
        (then `crash()` records it, in the background: `crashed` turns true within a second or
        so); exit 0 once it is off, also when it was off already; each fence is logged in
        `fence_log()`. Written under the lab root, for every node of the lab."""
        script = self.root / "fence.sh"
        log = shlex.quote(str(self.root / "fenced.log"))
        switch = shlex.quote(_netns(self.name, SWITCH))
        record = shlex.join([sys.executable, "-m", "skyge.clients.cli.main", "lab", "crash",
                             "--name", self.name])
        cases = "\n".join(node.fence_script_case() for node in self.nodes)
        script.write_text(f"""#!/bin/sh
# skyge lab fence: power node $SKYGE_FENCE_DOMAIN of lab {self.name} off
case "$SKYGE_FENCE_DOMAIN" in
{cases}
  *) echo "lab {self.name} has no node $SKYGE_FENCE_DOMAIN" >&2; exit 1 ;;
esac
for port in $ports; do ip -n {switch} link set dev "$port" down || exit 1; done
pids=$(ip netns pids "$netns") || exit 1
echo "$SKYGE_FENCE_DOMAIN $(date +%s%N)" >> {log}
if [ -z "$pids" ]; then echo "node $SKYGE_FENCE_DOMAIN was off already"; exit 0; fi
kill -KILL $pids 2>/dev/null
setsid {record} "n$SKYGE_FENCE_DOMAIN" >/dev/null 2>&1 < /dev/null &
echo "node $SKYGE_FENCE_DOMAIN is off"
""")
        script.chmod(0o755)
        return f"sh {shlex.quote(str(script))}"

    def fence_log(self) -> list[tuple[int, int]]:
        """(node id, wall-clock ns it was off) for every fence by `fence_command()`, in order."""
        path = self.root / "fenced.log"
        if not path.exists():
            return []
        return [(int(node), int(ns)) for node, ns in
                (line.split() for line in path.read_text().splitlines() if line.strip())]

    def partition(self, groups: Sequence[Iterable[int | str]], *,
                  gateway: int | None = 0) -> list[list[int]]:
        """Split the nodes into groups that cannot reach each other on either network.

        *groups* lists node ids (or names); nodes not listed form one more group together. The
        gateway and the client stay with group number *gateway* (an index into the groups, the
        extra group last), or alone if None. Returns the groups in effect. Re-partitioning
        replaces the previous partition; `heal()` undoes it.
        """
        effective: list[list[int]] = []
        seen: set[int] = set()
        for group in groups:
            ids = []
            for ident in group:
                node = self.node(ident)
                if node.id in seen:
                    raise LabError(f"node {node.key} is in more than one partition group")
                seen.add(node.id)
                ids.append(node.id)
            if not ids:
                raise LabError("a partition group is empty")
            effective.append(sorted(ids))
        rest = [n.id for n in self.nodes if n.id not in seen]
        if rest:
            effective.append(rest)
        if gateway is not None and not 0 <= gateway < len(effective):
            raise LabError(f"gateway group must be 0 to {len(effective) - 1} or None, "
                           f"got {gateway!r}")
        with _state.mutate(self.name) as data:
            lines = [f"link set dev {n.port(nic)} nomaster" for n in self.nodes for nic in NICS]
            lines += self._group_bridge_deletes(data)
            for index, group in enumerate(effective):
                if index == gateway:
                    bridges = dict(BRIDGES)
                else:
                    bridges = {nic: f"{b}{index + 1}" for nic, b in BRIDGES.items()}
                    for bridge in bridges.values():
                        lines += [f"link add name {bridge} type bridge mcast_snooping 0",
                                  f"link set dev {bridge} up"]
                for node_id in group:
                    lines += [f"link set dev {self.nodes[node_id - 1].port(nic)} master "
                              f"{bridges[nic]}" for nic in NICS]
            self._switch(lines)
            data["partition"] = {"groups": effective, "gateway": gateway}
        return effective

    def cut_between(self, first: LabNode, second: LabNode, percent: float = 100) -> None:
        """Drop `percent` % of the frames between two nodes on both networks (0: heal), while
        both still reach every other host (the gateway, the client): the two-node cut in which
        both sides reach the reference IP."""
        for nic in NICS:
            first.set_loss(nic, percent, "both", peer=second)
            second.set_loss(nic, percent, "both", peer=first)

    def heal(self) -> None:
        """Undo `partition()`: every node back on the main bridges."""
        with _state.mutate(self.name) as data:
            lines = [f"link set dev {n.port(nic)} master {BRIDGES[nic]}"
                     for n in self.nodes for nic in NICS]
            self._switch(lines + self._group_bridge_deletes(data))
            data["partition"] = None

    def clear_faults(self) -> None:
        """Heal the partition, restore every cut cable, drop every loss rule, thaw every host
        (crashed nodes stay crashed)."""
        self.heal()
        data = _state.read(self.name) or {}
        for key, nics in data.get("cut", {}).items():
            for nic in list(nics):
                self.host(key).restore(nic)
        with _state.mutate(self.name) as data:
            self._apply_loss([])
            data["loss"] = []
        for key in list(data.get("frozen", [])):
            self.host(key).thaw()

    def _group_bridge_deletes(self, data: Mapping[str, Any]) -> list[str]:
        part = data.get("partition")
        if not part:
            return []
        return [f"link del dev {b}{index + 1}" for index in range(len(part["groups"]))
                if index != part["gateway"] for b in BRIDGES.values()]

    def _switch(self, lines: list[str]) -> None:
        _net.ip_batch(lines, _netns(self.name, SWITCH), what="switch")

    def _ports(self) -> dict[str, dict[str, Any]]:
        return {link.get("ifname", ""): link
                for link in _net.ip_json(["link", "show"], _netns(self.name, SWITCH))}

    def _apply_loss(self, rules: list[dict[str, Any]]) -> None:
        table = f"bridge {NFT_TABLE}"
        script = [f"table {table} {{", "  chain loss {",
                  "    type filter hook forward priority 0; policy accept;", "  }", "}",
                  f"flush chain {table} loss"]
        for rule in rules:
            host = self.host(rule["host"])
            port = host.port(rule["nic"])
            match = f'iifname "{port}"' if rule["dir"] == "out" else f'oifname "{port}"'
            if rule["peer"]:
                peer_mac = self.host(rule["peer"]).mac(rule["nic"])
                match += f" ether {'daddr' if rule['dir'] == 'out' else 'saddr'} {peer_mac}"
            threshold = round(rule["percent"] * 10_000)  # parts per million
            chance = "" if threshold >= 1_000_000 else f" numgen random mod 1000000 < {threshold}"
            script.append(f"add rule {table} loss {match}{chance} counter drop")
        _net.nft_apply(_netns(self.name, SWITCH), "\n".join(script) + "\n")

    # -- inspection -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Everything about the lab as plain data (what `skyge lab status` prints)."""
        data = _state.read(self.name)
        if data is None:
            raise LabError(f"lab {self.name!r} is not up")
        ports = self._ports()
        counts = _scan_hosts(self.name, [h.key for h in self.hosts], data)
        hosts = []
        for host in self.hosts:
            holder = data["holders"].get(host.key)
            state = ("crashed" if host.key in data["crashed"] else
                     "frozen" if host.key in data["frozen"] else "up")
            nics = {}
            for nic in host.nics:
                port = ports.get(host.port(nic), {})
                nics[nic] = {"addresses": list(host.addresses(nic)), "mac": host.mac(nic),
                             "port": host.port(nic), "bridge": port.get("master"),
                             "link": ("cut" if nic in data["cut"].get(host.key, []) else
                                      "up" if "UP" in port.get("flags", []) else "down")}
            hosts.append({"host": host.key, "netns": host.netns, "root": str(host.root),
                          "state": state, "holder": holder,
                          "processes": len([p for p in counts[host.key] if p != holder]),
                          "nics": nics})
        return {"name": self.name, "nodes": self.size, "root": str(self.root),
                "switch": _netns(self.name, SWITCH), "detached": data["detached"],
                "created": data["created"], "partition": data["partition"],
                "loss": data["loss"], "hosts": hosts}

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]


# -- helpers shared by Lab, hosts, destroy and cleanup ------------------------------------------
def _host_net_lines(host: LabHost) -> list[str]:
    """ip commands (inside the host) that give it its base configuration."""
    lines = ["link set dev lo up"]
    for nic in host.nics:
        lines += [f"addr flush dev {nic}", f"link set dev {nic} addrgenmode none"]
        lines += [f"addr add {a}/{PREFIX_LEN} brd + dev {nic}" for a in host.addresses(nic)]
        lines.append(f"link set dev {nic} up")
    if host.key != GATEWAY:
        lines.append(f"route replace default via {GATEWAY_IPS[0]} dev eth0 onlink")
    return lines


def _start_holders(lab: Lab, keys: Sequence[str]) -> dict[str, int]:
    """Start one holder per host (its own mount namespace) and wait until each is in place."""
    procs = {}
    for key in keys:
        procs[key] = subprocess.Popen(
            ["ip", "netns", "exec", _netns(lab.name, key), "unshare", "--mount",
             "--propagation", "private", "--", "bash", "-c",
             # `ip netns exec` mounted a sysfs of the host's network namespace over /sys, which
             # hides the cgroup2 hierarchy the HA daemon puts services in: mount it back
             f"mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; "
             f"exec -a {_holder_mark(lab.name, key)} sleep infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, close_fds=True)
        lab._children[procs[key].pid] = procs[key]
    deadline = time.monotonic() + READY_TIMEOUT
    pending = dict(procs)
    while pending:
        for key, proc in list(pending.items()):
            if _is_holder(proc.pid, lab.name, key):
                del pending[key]
                if proc.stderr:
                    proc.stderr.close()
            elif proc.poll() is not None:
                error = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise LabError(f"{key}: the namespace holder failed to start: {error}")
        if pending and time.monotonic() > deadline:
            raise LabError(f"namespace holders of {', '.join(pending)} not ready after "
                           f"{READY_TIMEOUT:g} s")
        if pending:
            time.sleep(0.002)
    return {key: proc.pid for key, proc in procs.items()}


def _record_alive(record: Mapping[str, Any]) -> bool:
    return (_process.alive(record["pid"]) and
            _process.start_time(record["pid"]) == record.get("start"))


def _host_namespaces(lab: str, keys: Sequence[str], data: Mapping[str, Any] | None
                     ) -> tuple[dict[_process.NsId, str], dict[_process.NsId, str]]:
    """The network namespaces (by name) and holder mount namespaces of the hosts, by host key."""
    net: dict[_process.NsId, str] = {}
    mnt: dict[_process.NsId, str] = {}
    for key in keys:
        nid = _process.ns_id(f"/run/netns/{_netns(lab, key)}")
        if nid:
            net[nid] = key
        holder = (data or {}).get("holders", {}).get(key)
        if holder and _is_holder(holder, lab, key):
            mid = _process.pid_ns(holder, "mnt")
            if mid:
                mnt[mid] = key
    return net, mnt


def _member_check(net: Mapping[_process.NsId, str], mnt: Mapping[_process.NsId, str]
                  ) -> Callable[[int], bool]:
    """A test 'is this PID (still) in one of these namespaces', for `_process.send`."""
    def owned(pid: int) -> bool:
        if _process.pid_ns(pid, "net") in net:
            return True
        return bool(mnt) and _process.pid_ns(pid, "mnt") in mnt
    return owned


def _member_or_holder_check(member: Callable[[int], bool], marked: set[int], lab: str,
                            keys: Sequence[str]) -> Callable[[int], bool]:
    """`member`, or one of the `marked` PIDs still a holder of one of the hosts."""
    def owned(pid: int) -> bool:
        return member(pid) or (pid in marked and _holders_by_mark_key(pid, lab) in keys)
    return owned


def _scan_hosts(lab: str, keys: Sequence[str],
                data: Mapping[str, Any] | None) -> dict[str, list[int]]:
    """PIDs of each host: in its named netns, or in the mount namespace of its (verified) holder."""
    net, mnt = _host_namespaces(lab, keys, data)
    found = _process.scan(net, mnt)
    return {key: found.get(key, []) for key in keys}


def _holders_by_mark(lab: str) -> dict[int, str]:
    """Holder processes of *lab* found by their argv[0] marker (works without any state)."""
    prefix = f"{HOLDER_MARK}:{lab}:"
    found = {}
    for pid in _process.all_pids():
        argv = _process.cmdline(pid)
        if argv and argv[0].startswith(prefix):
            found[pid] = argv[0][len(prefix):]
    return found


def _kill_hosts(lab: str, keys: Sequence[str], data: Mapping[str, Any] | None) -> list[int]:
    """SIGKILL every process of the hosts (holders included) but the caller, rescanning a few
    times; return the PIDs still alive afterwards. (A node may crash itself: see
    `LabNode.self_crash_command`.)"""
    left: list[int] = []
    for _ in range(5):
        net, mnt = _host_namespaces(lab, keys, data)
        found = _process.scan(net, mnt)
        pids = {p for key in keys for p in found.get(key, [])} - {os.getpid()}
        marked = {p for p, key in _holders_by_mark(lab).items() if key in keys}
        if not pids and not marked:
            return []
        owned = _member_or_holder_check(_member_check(net, mnt), marked, lab, keys)
        sent = _process.send(sorted(pids | marked), signal.SIGKILL, owned)
        left = _process.wait_gone(sent, KILL_TIMEOUT)
        if left:
            return left
    return left


def _holders_by_mark_key(pid: int, lab: str) -> str:
    argv = _process.cmdline(pid)
    prefix = f"{HOLDER_MARK}:{lab}:"
    return argv[0][len(prefix):] if argv and argv[0].startswith(prefix) else ""


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veths, bridges)")
    for tool in ("ip", "nsenter", "unshare", "nft", "bash", "sleep"):
        if shutil.which(tool) is None:
            raise LabError(f"the lab needs {tool!r}, which is not installed")


def _is_stale(name: str, data: Mapping[str, Any] | None) -> bool:
    """A lab is stale when it has no readable state, its owner process is gone, or its switch
    namespace is gone."""
    if data is None:
        return True
    owner = data.get("owner")
    if owner and _process.start_time(owner["pid"]) != owner.get("start"):
        return True
    return (data.get("status") == "up"
            and _process.ns_id(f"/run/netns/{_netns(name, SWITCH)}") is None)


def _unmount_under(folder: Path) -> None:
    """Unmount (lazily) anything mounted under *folder* in this mount namespace."""
    prefix = str(folder).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    targets = [line.split()[4] for line in lines]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        _net.run(["umount", "-l", target], what="umount", check=False)


def known_labs() -> list[str]:
    """Names of every lab on this machine, live or stale (namespaces, folders, holders)."""
    names = {m.group("lab") for ns in _net.list_netns() if (m := NETNS_PATTERN.match(ns))}
    if LAB_ROOT.is_dir():
        names.update(p.name for p in LAB_ROOT.iterdir()
                     if p.is_dir() and NAME_PATTERN.match(p.name))
    for pid in _process.all_pids():
        argv = _process.cmdline(pid)
        if argv and argv[0].startswith(HOLDER_MARK + ":"):
            names.add(argv[0].split(":")[1])
    return sorted(names)


def _remove_service_cgroups(roots: list[Path]) -> None:
    """The services' cgroups the nodes' HA daemons made (empty once their processes are gone)."""
    from skyge.services.ha.resources.cgroup import cgroup2_mount, node_label
    mount = cgroup2_mount()
    if mount is None:
        return
    for root in roots:
        top = mount / "skyge" / node_label(root)
        if not top.is_dir():
            continue
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
            _rmdir_when_empty(folder)
        _rmdir_when_empty(top)
    with contextlib.suppress(OSError):  # not empty: another lab (or node) has cgroups there
        (mount / "skyge").rmdir()


def _rmdir_when_empty(folder: Path, timeout_s: float = 5.0) -> None:
    """rmdir a cgroup, waiting (bounded) for its killed processes to be reaped."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)


def destroy(name: str) -> bool:
    """Remove lab *name* completely, whatever its state: kill its processes (by PID), delete its
    namespaces (and so its cables and bridges), remove its folder. Idempotent; returns whether
    anything was there."""
    validate_name(name)
    namespaces = [ns for ns in _net.list_netns()
                  if (m := NETNS_PATTERN.match(ns)) and m.group("lab") == name]
    data = _state.read(name)
    keys = sorted({m.group("host") for ns in namespaces if (m := NETNS_PATTERN.match(ns))} |
                  set(_holders_by_mark(name).values()) | set((data or {}).get("holders", {})))
    found = bool(namespaces or keys or lab_dir(name).exists())
    left = _kill_hosts(name, keys, data) if keys else []
    _remove_service_cgroups([lab_dir(name) / key for key in keys])
    if namespaces:
        _net.ip_batch([f"netns del {ns}" for ns in namespaces], what="deleting namespaces",
                      check=False)
    folder = lab_dir(name)
    if folder.exists():
        _unmount_under(folder)
        shutil.rmtree(folder, ignore_errors=True)
    remaining = [ns for ns in _net.list_netns()
                 if (m := NETNS_PATTERN.match(ns)) and m.group("lab") == name]
    if left or remaining or folder.exists():
        raise LabError(f"could not fully remove lab {name!r}: processes {left}, "
                       f"namespaces {remaining}, folder {'kept' if folder.exists() else 'gone'}")
    return found


def cleanup_stale(name: str | None = None, *, prefix: str | None = None) -> list[str]:
    """Remove the leftovers of crashed runs; return the names of the labs removed.

    Looks at lab *name*, or every lab whose name starts with *prefix*, or every lab. A lab is
    removed when it is stale: no readable state file (even if its namespaces or processes are
    there), its owner process is gone (labs made by `Lab.up(detached=False)`), or its switch
    namespace is gone. Live labs are never touched: use `destroy()` or `Lab.down()` for those.
    """
    if name is not None:
        validate_name(name)
    removed = []
    for lab in known_labs():
        if name is not None and lab != name:
            continue
        if prefix is not None and not lab.startswith(prefix):
            continue
        if _is_stale(lab, _state.read(lab)):
            destroy(lab)
            removed.append(lab)
    return removed


_OWNED: set[str] = set()
_CREATOR = os.getpid()


def owned_labs() -> list[Lab]:
    """The labs this process brought up and has not taken down yet."""
    labs = []
    for name in sorted(_OWNED):
        with contextlib.suppress(LabError):  # being taken down
            labs.append(Lab.attach(name))
    return labs


@atexit.register
def _down_owned_labs() -> None:
    """Labs owned by this process are taken down when it exits (not in forked children)."""
    if os.getpid() != _CREATOR:
        return
    for name in sorted(_OWNED):
        with contextlib.suppress(LabError):
            destroy(name)
