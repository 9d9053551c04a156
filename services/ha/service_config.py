"""User services as the seed defines them: `slots/{random,fifo,stack}/N/service.cfg`.

The HA daemon reads its services from a config folder (``NodePaths.etc / "ha"``, see
`ha_config_dir`); the seed's own folder (``/etc/skygeha_8``, holding ``slots/``) works unchanged,
and so does a path to the ``slots`` folder itself. Each ``service.cfg`` is libconfig text
(`skyge.services.common.config`), e.g. the seed's mysql example::

    name = "mysql";
    onstart = "yes";
    script = "/etc/init.d/mysqld";
    fip = "eth0-192.168.1.100-255.255.255.0-192.168.1.255:";
    store = "192.168.1.253-/dev/sdb1-/var/lib/mysql-755-mysql-mysql:"
    start_timeout = 30;
    stop_timeout = 30;
    check_interval = 5;

Options (seed table 6-2, then ours). Numbers may be quoted ("5"); yes/no also takes true/false.

=====================  =========  ==============================================================
option                 default    meaning
=====================  =========  ==============================================================
name                   required   1-64 letters or digits, unique on the node (and cluster-wide)
script                 required   absolute path; called ``script start|stop|status``, exit 0 =
                                  success / running. How it is called depends on its kind (see
                                  `script_type`): a seed script or an LSB init script
                                  (``/etc/init.d/*``) gets ``start|stop|status`` (LSB status 3 =
                                  not running); an OCF agent (``…/resource.d/PROVIDER/TYPE``)
                                  gets ``start|stop|monitor`` with OCF_ROOT, OCF_RESKEY_* (from
                                  `ocf_params`) in its environment (monitor 7 = not running).
desc                   ""         free text, at most 256 characters
fip                    none       groups ``NIC-IP-MASK-BROADCAST:`` (floating IPs), e.g.
                                  ``eth0-192.168.1.100-255.255.255.0-192.168.1.255:``; MASK may
                                  also be a prefix length (``24``); the last ``:`` may be left out
store                  none       groups ``ARRAY_IP-DEVICE-MOUNTPOINT-MODE-USER-GROUP:``; MODE is
                                  octal (``755``); ARRAY_IP may be empty (no disk array to check)
start_timeout          300        s, 1-86400
stop_timeout           300        s, 1-86400
release_timeout        = stop     s, 1-86400: releasing the resources (IPs, mounts)
onstart                no         yes: start as soon as the lock is first granted
check_interval         3          s between two ``status`` checks, 1-3600
check_failures         1          consecutive failed checks before the service fails, 1-100.
                                  The seed's table names it only in Chinese (检查服务失败次数), so
                                  ``check_times``, ``check_fail_times`` and ``check_count`` are
                                  accepted too (one spelling per file).
force_load             no         (also ``force-load``) manage a service the OS already started
force_reboot           no         (also ``force-reboot``) reboot when stop or release fails
pidfile                ""         (ours) absolute path of the main process's pid file: its death
                                  is seen at once (pidfd), not at the next check
pulse_timeout_ms       0          (ours) user heartbeat: 0 = off, else 100-3600000 ms
restarts               0          (ours) local restarts before switching to another node, 0-100
failure_backoff        1          (ours) s, 0-3600: after a failure switched the service away,
                                  this node queues for it again only after this delay, doubled
                                  per failure in a row here (a run of 60 s resets it); 0 = at
                                  once (the seed's behaviour)
failure_backoff_max    60         (ours) s, 1-86400: the longest back-off
failure_timeout        0          (ours) s, 0-86400: a start that failed here is forgotten after
                                  this long and the node queues again (Pacemaker's
                                  failure-timeout); 0 = never: only a start command
status_timeout         30         (ours) s, 1-86400: a ``status`` running longer is a failed check
script_type            auto       (ours) auto|seed|lsb|ocf: how `script` is called (auto: OCF if
                                  the path has ``/resource.d/``, LSB under ``/etc/init.d/`` or
                                  ``/etc/rc.d/init.d/``, else seed)
ocf_params             ""         (ours) ``key=value`` words passed as OCF_RESKEY_key to OCF agents;
                                  a value with spaces is quoted as in a shell: ``msg='a b'``
umount                 normal     (ours) normal|force|lazy: what to do when a store's mount is busy
                                  at stop (normal: fail; force: kill the processes using it, then
                                  unmount; lazy: detach, UNSAFE on a shared disk, see `store`)
=====================  =========  ==============================================================

Floating IP labels. Each floating IP gets the label ``NIC:NNNN`` (the seed shows ``eth0:8200``),
with NNNN = ``k*3072 + t*1024 + slot`` written with at least 4 digits, where t is the type
(random 0, fifo 1, stack 2) and k counts the earlier floating IPs of the same service on the same
NIC (0 for the first). So random/0 is ``eth0:0000``, fifo/0 ``eth0:1024``, stack/7 ``eth0:2055``
and a second floating IP of fifo/0 on eth0 ``eth0:4096``. The map is one-to-one, so labels are
stable and unique on a node; with 3 or fewer floating IPs per NIC per service the number has 4
digits, so NIC names up to 10 characters fit the kernel's 15-character limit (a longer label is
refused with its reason).

`load_services` never stops at a bad file: it returns (services, errors); each error is a
`ConfigError` naming file, line (when there is one), option and reason.
"""
from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from skyge.services.common.config import (ConfigError, Field, Schema, Setting, boolean, choice,
                                          integer, parse_config, string)

__all__ = [
    "CONFIG_NAME",
    "LABEL_MAX",
    "MAX_SLOT",
    "SCHEMA",
    "TYPES",
    "TYPE_INDEX",
    "FloatingIp",
    "ServiceConfig",
    "Store",
    "fip_label",
    "ha_config_dir",
    "load_service",
    "load_services",
    "parse_service",
    "script_kind",
    "slots_dir",
]

#: the takeover orders, in the order services are scanned and labels numbered
TYPES: tuple[str, ...] = ("random", "fifo", "stack")
TYPE_INDEX = {name: index for index, name in enumerate(TYPES)}
MAX_SLOT = 1023
CONFIG_NAME = "service.cfg"
#: longest interface label the kernel takes (IFNAMSIZ - 1)
LABEL_MAX = 15
SCRIPT_KINDS = ("seed", "lsb", "ocf")
UMOUNT_MODES = ("normal", "force", "lazy")
LSB_DIRS = ("/etc/init.d/", "/etc/rc.d/init.d/")


@dataclass(frozen=True)
class FloatingIp:
    """One ``fip`` group; `label` is assigned from the service's type and slot."""

    nic: str
    ip: str
    netmask: str
    broadcast: str
    label: str = ""

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}").prefixlen

    @property
    def cidr(self) -> str:
        return f"{self.ip}/{self.prefixlen}"


@dataclass(frozen=True)
class Store:
    """One ``store`` group: mount DEVICE on MOUNTPOINT, then chmod MODE / chown USER:GROUP."""

    array_ip: str
    device: str
    mountpoint: str
    mode: int
    user: str
    group: str


@dataclass(frozen=True)
class ServiceConfig:
    """One loaded service.cfg, defaults applied (times in seconds unless named _ms)."""

    type: str
    slot: int
    name: str
    script: str
    path: str
    desc: str = ""
    fips: tuple[FloatingIp, ...] = ()
    stores: tuple[Store, ...] = ()
    start_timeout: int = 300
    stop_timeout: int = 300
    release_timeout: int = 300
    onstart: bool = False
    check_interval: int = 3
    check_failures: int = 1
    force_load: bool = False
    force_reboot: bool = False
    pidfile: str = ""
    pulse_timeout_ms: int = 0
    restarts: int = 0
    failure_backoff: int = 1
    failure_backoff_max: int = 60
    failure_timeout: int = 0
    status_timeout: int = 30
    #: how `script` is called: "seed", "lsb" or "ocf" (never "auto": resolved at load)
    script_kind: str = "seed"
    #: OCF_RESKEY_* parameters, (key, value) in file order
    ocf_params: tuple[tuple[str, str], ...] = ()
    umount: str = "normal"

    @property
    def key(self) -> tuple[str, int]:
        """(type, slot): what `ha_svc_commander -t TYPE -s SLOT` names."""
        return (self.type, self.slot)


# --- value converters ---------------------------------------------------------------------------
_NIC_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")  # no '/', ':', blanks (kernel dev_valid_name)
_NAME_RE = re.compile(r"[A-Za-z0-9_][-A-Za-z0-9_.]{0,31}|\d+")  # user / group names, or ids


def _ipv4(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 address") from None


def _netmask(text: str) -> str:
    """A dotted netmask (contiguous ones) or a prefix length 0-32, as a dotted netmask."""
    if re.fullmatch(r"\d{1,2}", text) and int(text) <= 32:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
    try:
        bits = int(ipaddress.IPv4Address(text))
    except ValueError:
        bits = -1
    inverted = ~bits & 0xFFFFFFFF
    if bits < 0 or inverted & (inverted + 1):
        raise ValueError(f"netmask {text!r} is not a netmask (e.g. 255.255.255.0 or 24)")
    return text


def _groups(value: Any) -> list[str]:
    if not isinstance(value, str):
        raise ValueError(f"must be a quoted string of groups ending with ':', got {value!r}")
    text = value.strip()
    if not text:
        return []
    if text.endswith(":"):
        text = text[:-1]
    groups = [g.strip() for g in text.split(":")]
    for number, group in enumerate(groups, 1):
        if not group:
            raise ValueError(f"group {number} is empty (groups are separated by ':')")
    return groups


def _fip_groups(value: Any) -> tuple[FloatingIp, ...]:
    result = []
    for number, group in enumerate(_groups(value), 1):
        parts = group.split("-")
        if len(parts) < 4:
            raise ValueError(f"group {number} {group!r} must be NIC-IP-MASK-BROADCAST "
                             f"(4 fields separated by '-', got {len(parts)})")
        nic, ip, mask, brd = "-".join(parts[:-3]), parts[-3], parts[-2], parts[-1]
        try:
            if not _NIC_RE.fullmatch(nic):
                raise ValueError(f"NIC {nic!r} is not an interface name (1-15 characters, "
                                 f"no '/', ':' or blanks)")
            ip = _ipv4(ip, "IP")
            mask = _netmask(mask)
            brd = _ipv4(brd, "broadcast")
        except ValueError as error:
            raise ValueError(f"group {number} {group!r}: {error}") from None
        result.append(FloatingIp(nic, ip, mask, brd))
    return tuple(result)


# DEVICE ends at the first "-/"; MOUNTPOINT is the longest path followed by -MODE-USER-GROUP
_STORE_RE = re.compile(r"(?P<ip>[^-/]*)-(?P<dev>/.*?)-(?P<mnt>/.*)-(?P<mode>[0-7]{1,4})"
                       r"-(?P<owner>[^-/][^/]*-[^/]+)")


def _split_owner(owner: str) -> tuple[str, str] | None:
    """USER-GROUP; names may contain '-', so when ambiguous take the split whose names exist."""
    cuts = [i for i, ch in enumerate(owner) if ch == "-"]
    candidates = [(owner[:i], owner[i + 1:]) for i in cuts]
    candidates = [(u, g) for u, g in candidates if _NAME_RE.fullmatch(u) and _NAME_RE.fullmatch(g)]
    if len(candidates) == 1:
        return candidates[0]
    for user, group in candidates:
        if _user_exists(user) and _group_exists(group):
            return user, group
    return None


def _user_exists(name: str) -> bool:
    if name.isdigit():
        return True
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _group_exists(name: str) -> bool:
    if name.isdigit():
        return True
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _store_groups(value: Any) -> tuple[Store, ...]:
    result = []
    for number, group in enumerate(_groups(value), 1):
        match = _STORE_RE.fullmatch(group)
        if match is None:
            raise ValueError(f"group {number} {group!r} must be "
                             f"ARRAY_IP-DEVICE-MOUNTPOINT-MODE-USER-GROUP (DEVICE and MOUNTPOINT "
                             f"absolute paths, MODE octal like 755)")
        array_ip = match["ip"]
        try:
            if array_ip:
                array_ip = _ipv4(array_ip, "array IP")
        except ValueError as error:
            raise ValueError(f"group {number} {group!r}: {error}") from None
        owner = _split_owner(match["owner"])
        if owner is None:
            raise ValueError(f"group {number} {group!r}: cannot tell USER from GROUP in "
                             f"{match['owner']!r} (expected USER-GROUP; names with '-' must "
                             f"exist on this node)")
        mountpoint = os.path.normpath(match["mnt"])
        if mountpoint == "/":
            raise ValueError(f"group {number} {group!r}: the mount point cannot be /")
        result.append(Store(array_ip, match["dev"], mountpoint, int(match["mode"], 8), *owner))
    return tuple(result)


def _absolute_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if "\0" in value or len(value) > 4096:
        raise ValueError("is not a usable path")
    return value


def _optional_path(value: Any) -> str:
    if value == "":
        return ""
    return _absolute_path(value)


def _pulse_timeout(value: Any) -> int:
    number = integer(0, 3_600_000)(value)
    if 0 < number < 100:
        raise ValueError(f"must be 0 (off) or from 100 to 3600000 ms, got {number}")
    return number


def _ocf_params(value: Any) -> dict[str, str]:
    """`key=value` words, quoted as in a shell (`msg='a b'`) for values with spaces."""
    text = string()(value)
    try:
        words = shlex.split(text)
    except ValueError as error:  # an unclosed quote
        raise ValueError(f"{error} in {text!r} (quote a value with spaces: msg='a b')") from None
    params = {}
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{word!r} is not key=value (key: letters, digits, _)")
        params[key] = val
    return params


_SECONDS = integer(1, 86_400)

#: every option of a service.cfg (see the module doc)
SCHEMA = Schema([
    Field("name", string(r"[A-Za-z0-9]{1,64}", "1-64 letters or digits"), required=True),
    Field("script", _absolute_path, required=True),
    Field("desc", string(r"(?s).{0,256}", "at most 256 characters"), default=""),
    Field("fip", _fip_groups, default=()),
    Field("store", _store_groups, default=()),
    Field("start_timeout", _SECONDS, default=300),
    Field("stop_timeout", _SECONDS, default=300),
    Field("release_timeout", _SECONDS, default=None),
    Field("onstart", boolean, default=False),
    Field("check_interval", integer(1, 3600), default=3),
    Field("check_failures", integer(1, 100), default=1,
          aliases=("check_times", "check_fail_times", "check_count")),
    Field("force_load", boolean, default=False, aliases=("force-load",)),
    Field("force_reboot", boolean, default=False, aliases=("force-reboot",)),
    Field("pidfile", _optional_path, default=""),
    Field("pulse_timeout_ms", _pulse_timeout, default=0),
    Field("restarts", integer(0, 100), default=0),
    Field("failure_backoff", integer(0, 3600), default=1),
    Field("failure_backoff_max", _SECONDS, default=60),
    Field("failure_timeout", integer(0, 86400), default=0),
    Field("status_timeout", _SECONDS, default=30),
    Field("script_type", choice("auto", *SCRIPT_KINDS), default="auto"),
    Field("ocf_params", _ocf_params, default=None),
    Field("umount", choice(*UMOUNT_MODES), default="normal"),
])


# --- folders, labels, script kinds --------------------------------------------------------------
def ha_config_dir(paths: Any) -> Path:
    """The HA config folder of a node (`NodePaths`): ROOT/etc/skyge/ha (holding ``slots/``)."""
    return Path(paths.etc) / "ha"


def slots_dir(folder: str | os.PathLike[str]) -> Path:
    """The ``slots`` folder of an HA config folder; `folder` may also be the slots folder itself
    (one holding random/, fifo/ or stack/)."""
    folder = Path(folder)
    if (folder / "slots").is_dir():
        return folder / "slots"
    if folder.name == "slots" or any((folder / t).is_dir() for t in TYPES):
        return folder
    return folder / "slots"


def fip_label(nic: str, type: str, slot: int, index_on_nic: int = 0) -> str:
    """``NIC:NNNN`` with NNNN = index_on_nic*3072 + type_index*1024 + slot (see module doc)."""
    number = index_on_nic * 3 * (MAX_SLOT + 1) + TYPE_INDEX[type] * (MAX_SLOT + 1) + slot
    return f"{nic}:{number:04d}"


def script_kind(script: str, declared: str = "auto") -> str:
    """How `script` is called: "ocf" (path has /resource.d/), "lsb" (an init.d script), "seed"."""
    if declared != "auto":
        return declared
    if "/resource.d/" in script:
        return "ocf"
    if script.startswith(LSB_DIRS):
        return "lsb"
    return "seed"


def _with_labels(fips: Iterable[FloatingIp], type: str, slot: int) -> tuple[FloatingIp, ...]:
    counts: dict[str, int] = {}
    result = []
    for fip in fips:
        index = counts.get(fip.nic, 0)
        counts[fip.nic] = index + 1
        label = fip_label(fip.nic, type, slot, index)
        if len(label) > LABEL_MAX:
            raise ValueError(f"NIC {fip.nic!r}: its label {label!r} would be longer than "
                             f"{LABEL_MAX} characters (use NIC names of at most 10 characters)")
        result.append(FloatingIp(fip.nic, fip.ip, fip.netmask, fip.broadcast, label))
    return tuple(result)


# --- loading ------------------------------------------------------------------------------------
def _line_of(settings: Iterable[Setting], field_name: str) -> int | None:
    spec = next((f for f in SCHEMA.fields if f.name == field_name), None)
    names = {field_name, *(spec.aliases if spec else ())}
    return next((s.line for s in settings if s.key in names), None)


def parse_service(text: str, type: str, slot: int, path: str = CONFIG_NAME) -> ServiceConfig:
    """Parse and check one service.cfg text for slot `type`/`slot`; raises ConfigError."""
    if type not in TYPE_INDEX:
        raise ConfigError(f"unknown takeover type {type!r} (allowed: {', '.join(TYPES)})",
                          path=path)
    if not 0 <= slot <= MAX_SLOT:
        raise ConfigError(f"slot must be from 0 to {MAX_SLOT}, got {slot}", path=path)
    settings = parse_config(text, path)
    values = SCHEMA.validate(settings, path)
    try:
        fips = _with_labels(values["fip"], type, slot)
    except ValueError as error:
        raise ConfigError(str(error), path=path, line=_line_of(settings, "fip"),
                          key="fip") from None
    kind = script_kind(values["script"], values["script_type"])
    if values["ocf_params"] and kind != "ocf":
        raise ConfigError("only OCF agents take ocf_params (set script_type = \"ocf\" or use "
                          "an agent under .../resource.d/)", path=path,
                          line=_line_of(settings, "ocf_params"), key="ocf_params")
    seen: dict[str, int] = {}
    for number, fip in enumerate(fips, 1):
        if fip.ip in seen:
            raise ConfigError(f"group {number}: IP {fip.ip} is already group {seen[fip.ip]}",
                              path=path, line=_line_of(settings, "fip"), key="fip")
        seen[fip.ip] = number
    mounts: dict[str, int] = {}
    for number, store in enumerate(values["store"], 1):
        if store.mountpoint in mounts:
            raise ConfigError(f"group {number}: mount point {store.mountpoint} is already group "
                              f"{mounts[store.mountpoint]}", path=path,
                              line=_line_of(settings, "store"), key="store")
        mounts[store.mountpoint] = number
    return ServiceConfig(
        type=type, slot=slot, name=values["name"], script=values["script"], path=path,
        desc=values["desc"], fips=fips, stores=tuple(values["store"]),
        start_timeout=values["start_timeout"], stop_timeout=values["stop_timeout"],
        release_timeout=values["release_timeout"] or values["stop_timeout"],
        onstart=values["onstart"], check_interval=values["check_interval"],
        check_failures=values["check_failures"], force_load=values["force_load"],
        force_reboot=values["force_reboot"], pidfile=values["pidfile"],
        pulse_timeout_ms=values["pulse_timeout_ms"], restarts=values["restarts"],
        failure_backoff=values["failure_backoff"],
        failure_backoff_max=values["failure_backoff_max"],
        failure_timeout=values["failure_timeout"], status_timeout=values["status_timeout"],
        script_kind=kind,
        ocf_params=tuple((values["ocf_params"] or {}).items()), umount=values["umount"])


def _conflict(config: ServiceConfig, others: Iterable[ServiceConfig]) -> ConfigError | None:
    """A clash of `config` with services already loaded: same slot, name, floating IP or mount."""
    for other in others:
        where = f"{other.type}/{other.slot} ({other.path})"
        if other.key == config.key:
            return ConfigError(f"slot {config.type}/{config.slot} is already loaded from "
                               f"{other.path}", path=config.path)
        if other.name == config.name:
            return ConfigError(f"service name {config.name!r} is already used by {where}",
                               path=config.path, key="name")
        ips = {f.ip for f in other.fips} & {f.ip for f in config.fips}
        if ips:
            return ConfigError(f"floating IP {sorted(ips)[0]} is already used by {where}",
                               path=config.path, key="fip")
        mounts = {s.mountpoint for s in other.stores} & {s.mountpoint for s in config.stores}
        if mounts:
            return ConfigError(f"mount point {sorted(mounts)[0]} is already used by {where}",
                               path=config.path, key="store")
    return None


def load_service(folder: str | os.PathLike[str], type: str, slot: int,
                 others: Iterable[ServiceConfig] = ()) -> ServiceConfig:
    """Load ``slots/TYPE/SLOT/service.cfg`` under `folder` (for ``add``); raises ConfigError,
    also when it clashes with `others` (same name, floating IP or mount point)."""
    path = slots_dir(folder) / type / str(slot) / CONFIG_NAME
    if type not in TYPE_INDEX:
        raise ConfigError(f"unknown takeover type {type!r} (allowed: {', '.join(TYPES)})",
                          path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found (each slot folder holds one service.cfg)",
                          path=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read: {error}", path=str(path)) from None
    config = parse_service(text, type, slot, str(path))
    clash = _conflict(config, others)
    if clash is not None:
        raise clash
    return config


def _slot_number(name: str) -> int | None:
    if re.fullmatch(r"0|[1-9][0-9]{0,3}", name) and int(name) <= MAX_SLOT:
        return int(name)
    return None


def load_services(folder: str | os.PathLike[str]) -> tuple[list[ServiceConfig], list[ConfigError]]:
    """Every service under `folder` (its ``slots/``) in type then slot order, and the errors.

    A bad file, a bad slot folder (not 0-1023, no service.cfg) or a clash with a service loaded
    before it (same name, floating IP or mount point) is reported in the errors and skipped; it
    never stops the others. A missing folder gives no services and no errors.
    """
    root = slots_dir(folder)
    services: list[ServiceConfig] = []
    errors: list[ConfigError] = []
    if not root.is_dir():
        return services, errors
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.name not in TYPE_INDEX or not entry.is_dir():
            errors.append(ConfigError(f"not a takeover type folder (allowed: "
                                      f"{', '.join(TYPES)})", path=str(entry)))
    for type in TYPES:
        type_dir = root / type
        if not type_dir.is_dir():
            continue
        slots: list[tuple[int, Path]] = []
        for entry in type_dir.iterdir():
            if entry.name.startswith("."):
                continue
            slot = _slot_number(entry.name)
            if slot is None or not entry.is_dir():
                errors.append(ConfigError(f"a slot folder must be named 0 to {MAX_SLOT}",
                                          path=str(entry)))
                continue
            slots.append((slot, entry))
        for slot, _ in sorted(slots):
            try:
                services.append(load_service(root, type, slot, services))
            except ConfigError as error:
                errors.append(error)
    return services, errors
