"""The seccomp filters systemd would put on the till service, for a test where systemd is not
PID 1 (no `systemd-run`): the unit's `SystemCallFilter=` lines (an allow-list, minus the `~` sets)
and `MemoryDenyWriteExecute=`, built the way systemd 252 builds them (libseccomp; a refused call
fails with `SystemCallErrorNumber=EPERM`; W^X as src/shared/seccomp-util.c's
seccomp_memory_deny_write_execute: no mmap both writable and executable, no mprotect/pkey_mprotect
to executable, no shmat with SHM_EXEC) and loaded before the program is exec'd, as systemd does.

    python tests/edge_app/seccomp_util.py UNIT -- PROGRAM ARGS...
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in open(unit, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def expand(names: list[str], seen: set[str] | None = None) -> set[str]:
    """System call names of `names`, the @sets expanded by systemd-analyze itself."""
    seen = set() if seen is None else seen
    calls: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            calls.add(name)
            continue
        if name in seen:
            continue
        seen.add(name)
        text = subprocess.run(
            ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
        ).stdout
        members = [ln.strip() for ln in text.splitlines()[1:] if ln.strip() and not ln.strip().startswith("#")]
        calls |= expand(members, seen)
    return calls


def allowed_calls(filters: list[str]) -> set[str]:
    """systemd's reading of several SystemCallFilter= lines: the first without `~` is the
    allow-list, each `~` line takes its sets away from it."""
    allow: set[str] = set()
    for line in filters:
        deny = line.startswith("~")
        names = expand(line.lstrip("~").split())
        allow = allow - names if deny else allow | names
    return allow


def load(unit: str) -> None:
    d = directives(unit)
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    code = getattr(errno, d.get("SystemCallErrorNumber", ["EPERM"])[-1])
    # W^X first: once the allow-list is in, seccomp() itself may be refused.
    if d.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        rules = [
            ("mmap", 2, wx, wx),
            ("mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
            ("pkey_mprotect", 2, mmap.PROT_EXEC, mmap.PROT_EXEC),
            ("shmat", 2, SHM_EXEC, SHM_EXEC),
        ]
        for name, arg, mask, value in rules:
            cmp = ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value)
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            assert lib.seccomp_rule_add_array(ctx, scmp_act_errno(errno.EPERM), nr, 1, ctypes.byref(cmp)) == 0, name
        assert lib.seccomp_load(ctx) == 0

    if d.get("SystemCallFilter"):
        ctx = lib.seccomp_init(scmp_act_errno(code))
        for name in sorted(allowed_calls(d["SystemCallFilter"])):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr >= 0:  # a call this architecture does not have
                assert lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None) == 0, name
        assert lib.seccomp_load(ctx) == 0


if __name__ == "__main__":
    unit, sep, *argv = sys.argv[1:]
    assert sep == "--", __doc__
    load(unit)
    os.execvp(argv[0], argv)
