"""File-system confinement of the sandboxed child with Linux Landlock (no root, no mounts, no helper binary).

After `restrict`, the calling process and everything it starts can open only the paths it was given: the
libraries read-only, the job's inputs read-only, its own folders read-write. Landlock also stops it from
signalling or tracing processes outside the sandbox, from reaching abstract Unix sockets outside it and, on
kernels with network rules, from any TCP bind or connect. Rules only ever add restrictions; they cannot be lifted.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Confinement", "abi_version", "restrict"]

# Syscall numbers are the same on x86_64 and aarch64 (the generic table).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Access rights on files, by the ABI that introduced them.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_DIR_WRITES = sum(1 << i for i in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2

READ = _EXECUTE | _READ_FILE | _READ_DIR
WRITE = READ | _WRITE_FILE | _DIR_WRITES | _REFER | _TRUNCATE
DEVICE = READ | _WRITE_FILE | _IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]  # fmt: skip


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Confinement:
    """What may be opened: each path with READ, WRITE or DEVICE rights (missing paths are skipped)."""

    rules: tuple[tuple[str, int], ...]
    deny_tcp: bool = True  # where the kernel can (Landlock ABI 4+): no TCP bind or connect at all


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    if platform.system() != "Linux":
        return 0
    version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


def _handled_fs(abi: int) -> int:
    rights = READ | _WRITE_FILE | _DIR_WRITES
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def _ruleset(abi: int, deny_tcp: bool) -> int:
    attr = _RulesetAttr(_handled_fs(abi), 0, 0)
    size = 8
    if abi >= 4 and deny_tcp:  # no TCP bind or connect at all: the network namespace is the first wall, this the second
        attr.handled_access_net, size = _NET_BIND_TCP | _NET_CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL, 24
    fd = _libc().syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    return int(fd)


def _add_rule(ruleset_fd: int, path: str, rights: int, handled: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False  # a path that does not exist grants nothing
    try:
        allowed = rights & handled
        if not Path(path).is_dir():
            allowed &= _FILE_ONLY  # directory rights on a file are an error (EINVAL)
        attr = _PathBeneathAttr(allowed, fd)
        if _libc().syscall(_SYS_ADD_RULE, ruleset_fd, _RULE_PATH_BENEATH, ctypes.byref(attr), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return True


def restrict(confinement: Confinement) -> str:
    """Confine this process to `confinement`; returns a one-line description, or why it was not applied."""
    abi = abi_version()
    if abi < 1:
        return "not isolated: the kernel has no Landlock (Linux 5.13+ with landlock in the LSM list)"
    ruleset_fd = _ruleset(abi, confinement.deny_tcp)
    try:
        granted = [p for p, rights in _dedupe(confinement.rules) if _add_rule(ruleset_fd, p, rights, _handled_fs(abi))]
        libc = _libc()
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset_fd)
    denied = [*(["TCP"] if abi >= 4 and confinement.deny_tcp else []), *(["signals and abstract sockets"] * (abi >= 6))]
    extra = f"; {' and '.join(denied)} outside the sandbox denied" if denied else ""
    return f"isolated: Landlock ABI {abi}, {len(granted)} paths granted{extra}"


def _dedupe(rules: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    merged: dict[str, int] = {}
    for path, rights in rules:
        merged[path] = merged.get(path, 0) | rights
    return sorted(merged.items())
