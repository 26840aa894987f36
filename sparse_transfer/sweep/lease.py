"""One driver per sweep: the lease every command that writes a sweep takes before it reads
anything, and gives back when it ends.

Locally it is an exclusive `flock` on `driver.lock` in the sweep directory, which the kernel
releases when its process dies however it dies. With S3 storage it is also an object,
`driver.lease`, written only if absent (`If-None-Match: *`), and deleted at the end. A driver
killed outright leaves that object behind: a later driver on the same host sees that its
holder's process is gone and takes over; on another host `--take-over` says the holder is
dead (the ledger's conditional segment writes still refuse a holder that was not)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparse_transfer.storage import Storage

__all__ = ["LEASE_FILE", "LOCK_FILE", "SweepBusy", "hold_lease"]

LOCK_FILE = "driver.lock"
LEASE_FILE = "driver.lease"


class SweepBusy(RuntimeError):
    """Another driver holds the sweep; the message names it and how to take over."""


def _me() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _process_start(os.getpid()),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "token": uuid.uuid4().hex,
    }


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is told
    apart from the holder; "" where /proc is missing."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive_here(holder: dict) -> bool:
    """Whether the holder may be alive: on another host it cannot be told, so it may."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", 0))
    if pid <= 0:
        return False
    started = _process_start(pid)
    return started == holder.get("started", "") if started else _exists(pid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(holder: dict) -> str:
    where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return f"{where} (since {holder.get('since', '?')})"


@contextmanager
def hold_lease(
    store: Storage, parts: tuple, sweep_dir: Path, location: str, *, take_over: bool = False
) -> Iterator[None]:
    me = _me()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = open(sweep_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held for the driver's life)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise SweepBusy(_busy(_parse(lock.read()), location, remote=False)) from None
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps(me))
        lock.flush()
        if store.is_remote:
            _take_remote(store, parts, me, location, take_over)
        try:
            yield
        finally:
            if store.is_remote and _remote_holder(store, parts).get("token") == me["token"]:
                store.delete(*parts, LEASE_FILE)
    finally:
        lock.close()  # releases the flock


def _take_remote(store: Storage, parts: tuple, me: dict, location: str, take_over: bool) -> None:
    path = store.local(*parts, LEASE_FILE)
    for _ in range(2):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(me))
        if store.upload(*parts, LEASE_FILE, if_absent=True):
            return
        holder = _remote_holder(store, parts)
        if holder and _alive_here(holder) and not take_over:
            raise SweepBusy(_busy(holder, location, remote=True))
        print(f"taking over sweep {location} from {describe(holder)}: its driver is gone")
        store.delete(*parts, LEASE_FILE)
    raise SweepBusy(f"another driver took sweep {location} at the same moment; run it again")


def _remote_holder(store: Storage, parts: tuple) -> dict:
    scratch = store.local(*parts, f".{LEASE_FILE}.{os.getpid()}")
    try:
        if not store.download_to(scratch, *parts, LEASE_FILE):
            return {}
        return _parse(scratch.read_text())
    finally:
        scratch.unlink(missing_ok=True)


def _parse(text: str) -> dict:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _busy(holder: dict, location: str, *, remote: bool) -> str:
    text = f"sweep {location} is being driven by {describe(holder)}; only one driver may run it."
    if remote:
        return (
            f"{text} If that driver is dead (its machine gone), take over with "
            f"`sparse-transfer resume --take-over {location}`"
        )
    return f"{text} Wait for it to end, or stop it (kill {holder.get('pid', '?')}) and resume"
