"""Shared-disk mounts (the seed's ``store``): mount a device, set the mount root's mode and
owner, unmount, and tell whether it is mounted (from /proc/self/mountinfo).

Everything acts in the calling process's mount namespace: in the lab the HA daemon runs in its
node's own mount namespace, so a mount made there is seen by that node only, as on real machines.

Mounting uses mount(2) directly when the filesystem type is recognised from the device's
superblock (ext2/3/4, xfs, btrfs, vfat), else it falls back to mount(8), which probes with blkid.
The calls block (a journal replay can take seconds): from the event loop use `mount_async` /
`unmount_async`, which run them in a thread.

When the mount is busy at unmount, `unmount` acts per the service's ``umount`` option:

- ``normal``: fail with the list of processes using the mount (pid and command);
- ``force``: SIGTERM those processes, SIGKILL the survivors after `KILL_WAIT_S`, unmount again;
- ``lazy``: detach it (MNT_DETACH). UNSAFE on a shared disk: the filesystem stays alive, and
  keeps writing the device, until its last user is gone, while another node may already mount
  it. Use only for filesystems that tolerate that (e.g. network filesystems).

The array IP of a store is not checked here (the supervisor decides what to do about it).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import grp
import os
import pwd
import signal
import stat
import subprocess
import time
from dataclasses import dataclass

from skyge.services.ha.service_config import Store

__all__ = [
    "KILL_WAIT_S",
    "MountEntry",
    "StoreError",
    "detect_fstype",
    "mount",
    "mount_async",
    "mount_at",
    "mounted",
    "mounts",
    "unmount",
    "unmount_async",
    "users",
]

MNT_DETACH = 2
KILL_WAIT_S = 2.0
COMMAND_TIMEOUT_S = 120.0

_libc = ctypes.CDLL(None, use_errno=True)  # the libc this interpreter is linked with
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class StoreError(Exception):
    """A store could not be mounted or unmounted; the message says which and why."""


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (the fields skyge reads)."""

    #: "major:minor" of the filesystem's device
    device: str
    mountpoint: str
    fstype: str
    source: str
    options: str


def _unescape(text: str) -> str:
    """mountinfo escapes blanks, tabs, newlines and backslashes as \\ooo."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 4 <= len(text) and text[i + 1:i + 4].isdigit():
            out.append(chr(int(text[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def mounts() -> list[MountEntry]:
    """The mounts of this process's mount namespace, in mount order."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
        for line in info:
            fields = line.split()
            try:
                sep = fields.index("-", 6)
            except ValueError:
                continue
            entries.append(MountEntry(fields[2], _unescape(fields[4]), fields[sep + 1],
                                      _unescape(fields[sep + 2]), fields[5]))
    return entries


def _real(path: str) -> str:
    return os.path.realpath(path)


def mount_at(mountpoint: str) -> MountEntry | None:
    """The filesystem visible at `mountpoint` when one is mounted exactly there (the top one)."""
    target = _real(mountpoint)
    found = None
    for entry in mounts():
        if entry.mountpoint == target:
            found = entry
    return found


def _device_id(device: str) -> str | None:
    try:
        st = os.stat(device)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def _is_device(entry: MountEntry, device: str) -> bool:
    ident = _device_id(device)
    return (ident is not None and entry.device == ident) or (
        entry.source.startswith("/") and _real(entry.source) == _real(device))


def mounted(store: Store) -> bool:
    """Whether store.device is mounted on store.mountpoint in this mount namespace."""
    entry = mount_at(store.mountpoint)
    return entry is not None and _is_device(entry, store.device)


# --- filesystem type ----------------------------------------------------------------------------
def detect_fstype(device: str) -> str | None:
    """ext4 / xfs / btrfs / vfat from the superblock, or None when not recognised."""
    try:
        with open(device, "rb") as disk:
            head = disk.read(4096)
            disk.seek(0x10040)
            btrfs = disk.read(8)
    except OSError:
        return None
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext4"  # the ext4 driver mounts ext2 and ext3 too
    if head[:4] == b"XFSB":
        return "xfs"
    if btrfs == b"_BHRfS_M":
        return "btrfs"
    if len(head) >= 512 and head[510:512] == b"\x55\xaa" and (
            head[54:59] in (b"FAT12", b"FAT16") or head[82:87] == b"FAT32"):
        return "vfat"
    return None


# --- mount --------------------------------------------------------------------------------------
def _owner_ids(store: Store) -> tuple[int, int]:
    try:
        uid = int(store.user) if store.user.isdigit() else pwd.getpwnam(store.user).pw_uid
    except KeyError:
        raise StoreError(f"{store.mountpoint}: user {store.user!r} does not exist on this "
                         f"node") from None
    try:
        gid = int(store.group) if store.group.isdigit() else grp.getgrnam(store.group).gr_gid
    except KeyError:
        raise StoreError(f"{store.mountpoint}: group {store.group!r} does not exist on this "
                         f"node") from None
    return uid, gid


def _syscall_mount(device: str, mountpoint: str, fstype: str, options: str) -> None:
    rc = _libc.mount(device.encode(), mountpoint.encode(), fstype.encode(), 0,
                     options.encode() if options else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise StoreError(f"cannot mount {device} ({fstype}) on {mountpoint}: "
                         f"{os.strerror(err)}")


def _command_mount(device: str, mountpoint: str, options: str) -> None:
    argv = ["mount", *(["-o", options] if options else []), device, mountpoint]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StoreError(f"cannot mount {device} on {mountpoint}: {error}") from None
    if done.returncode != 0:
        raise StoreError(f"cannot mount {device} on {mountpoint}: "
                         f"{(done.stderr or done.stdout).strip()}")


def _apply_owner(store: Store, uid: int, gid: int) -> None:
    os.chown(store.mountpoint, uid, gid)
    os.chmod(store.mountpoint, store.mode)


def mount(store: Store, *, fstype: str | None = None, options: str = "") -> bool:
    """Mount store.device on store.mountpoint (created if missing), then give the mount root
    store.mode and store.user:store.group. True if mounted now, False if it already was (mode
    and owner are applied either way). Raises StoreError."""
    uid, gid = _owner_ids(store)
    device, target = store.device, store.mountpoint
    if _device_id(device) is None:
        raise StoreError(f"cannot mount {device} on {target}: {device} is not a block device "
                         f"on this node")
    current = mount_at(target)
    if current is not None:
        if _is_device(current, device):
            _apply_owner(store, uid, gid)
            return False
        raise StoreError(f"cannot mount {device} on {target}: {current.source} is mounted "
                         f"there already")
    try:
        os.makedirs(target, mode=0o755, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the mount point {target}: {error.strerror}") from None
    kind = fstype or detect_fstype(device)
    if kind is None:
        _command_mount(device, target, options)
    else:
        _syscall_mount(device, target, kind, options)
    try:
        _apply_owner(store, uid, gid)
    except OSError as error:
        _umount(target, 0)
        raise StoreError(f"{target}: cannot set mode {store.mode:o} / owner "
                         f"{store.user}:{store.group}: {error.strerror}; unmounted again") from None
    return True


# --- unmount ------------------------------------------------------------------------------------
def _umount(target: str, flags: int) -> int:
    """0 on success, else the errno."""
    if _libc.umount2(target.encode(), flags) == 0:
        return 0
    return ctypes.get_errno()


def _within(path: str, target: str) -> bool:
    path = path.removesuffix(" (deleted)")
    return path == target or path.startswith(target.rstrip("/") + "/")


def users(mountpoint: str) -> list[tuple[int, str]]:
    """(pid, command name) of the processes of this mount namespace using the filesystem mounted
    on `mountpoint` (working directory, root, executable, open or mapped files); not ours.

    A file counts when its path is under `mountpoint` and it is on the mounted filesystem's
    device (so a directory of the same name under the mount does not count)."""
    target = _real(mountpoint)
    try:
        dev = os.stat(target).st_dev
    except OSError:
        return []
    maps_dev = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    own_ns = os.readlink("/proc/self/ns/mnt")
    found = []

    def uses(link: str) -> bool:
        try:
            return _within(os.readlink(link), target) and os.stat(link).st_dev == dev
        except OSError:
            return False

    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        base = f"/proc/{name}"
        try:
            if os.readlink(f"{base}/ns/mnt") != own_ns:
                continue
            links = [f"{base}/cwd", f"{base}/root", f"{base}/exe"]
            with contextlib.suppress(OSError):
                links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
            hit = any(uses(link) for link in links)
            if not hit:
                with open(f"{base}/maps", encoding="utf-8", errors="replace") as maps:
                    hit = any(len(parts := line.split(None, 5)) == 6 and parts[3] == maps_dev
                              and _within(parts[5].strip(), target) for line in maps)
            if hit:
                with open(f"{base}/comm", encoding="utf-8", errors="replace") as comm:
                    found.append((int(name), comm.read().strip()))
        except OSError:
            continue
    return sorted(found)


def _beneath(target: str) -> list[str]:
    prefix = target.rstrip("/") + "/"
    return [e.mountpoint for e in mounts() if e.mountpoint.startswith(prefix)]


def _describe_users(found: list[tuple[int, str]]) -> str:
    shown = ", ".join(f"pid {pid} ({comm})" for pid, comm in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return f"used by {shown}{more}" if found else "in use (no process found using it)"


def _kill_users(target: str, wait: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        found = users(target)
        if not found:
            return
        for pid, _ in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and users(target):
            time.sleep(0.02)


def unmount(store: Store, *, mode: str = "normal", kill_wait: float = KILL_WAIT_S) -> bool:
    """Unmount store.mountpoint when store.device is mounted there. True if unmounted now, False
    if it was not mounted (or another filesystem is mounted there: that one is left alone).
    `mode`: normal | force | lazy (see the module doc). Raises StoreError."""
    if mode not in ("normal", "force", "lazy"):
        raise ValueError(f"unmount mode must be normal, force or lazy, got {mode!r}")
    target = _real(store.mountpoint)
    entry = mount_at(target)
    if entry is None or not _is_device(entry, store.device):
        return False
    nested = _beneath(target)
    if nested and mode == "normal":
        raise StoreError(f"cannot unmount {target}: other filesystems are mounted beneath it "
                         f"({', '.join(nested)})")
    if mode == "force":
        for inner in sorted(nested, key=len, reverse=True):
            _kill_users(inner, kill_wait)
            _umount(inner, 0)
    flags = MNT_DETACH if mode == "lazy" else 0
    err = _umount(target, flags)
    if err == 0 or err == 22:  # EINVAL: no longer a mount point
        return err == 0
    if err == 16 and mode == "force":  # EBUSY
        _kill_users(target, kill_wait)
        err = _umount(target, 0)
        if err == 0:
            return True
    if err == 16:
        hint = "" if mode == "force" else '; stop them, or set umount = "force" in service.cfg'
        raise StoreError(f"cannot unmount {target}: busy, {_describe_users(users(target))}{hint}")
    raise StoreError(f"cannot unmount {target}: {os.strerror(err)}")


async def mount_async(store: Store, *, fstype: str | None = None, options: str = "") -> bool:
    """`mount` in a worker thread."""
    return await asyncio.to_thread(mount, store, fstype=fstype, options=options)


async def unmount_async(store: Store, *, mode: str = "normal",
                        kill_wait: float = KILL_WAIT_S) -> bool:
    """`unmount` in a worker thread."""
    return await asyncio.to_thread(unmount, store, mode=mode, kill_wait=kill_wait)
