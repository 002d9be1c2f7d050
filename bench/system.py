"""What the benchmark knows about the machine and its processes, read from /proc."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "platform": platform.platform(),
    }


def git_commit() -> dict[str, Any]:
    """The commit the tree is based on (read-only), and whether the tree has changes."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "--no-optional-locks", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    # The results file a run writes is not what it measures.
    measured = (".", ":(exclude)bench/results.json")
    status = git("status", "--porcelain", "--untracked-files=no", "--", *measured)
    diff = git("diff", "HEAD", "--", *measured)
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        # Identifies the uncommitted changes measured (tracked files only).
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


@dataclass(frozen=True)
class FileLimit:
    soft: int
    hard: int
    raised_from: int


def raise_file_limit() -> FileLimit:
    """Raise RLIMIT_NOFILE to its hard limit (children inherit it: the servers need it too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    new_soft, new_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FileLimit(new_soft, new_hard, soft)


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / ticks


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _socket_owners(pids: list[int]) -> dict[str, int]:
    """Socket inode -> which of ``pids`` holds it."""
    return {inode: pid for pid in pids for inode in _socket_inodes(pid)}


def _tcp_sockets() -> Iterator[tuple[int, int, bool, str]]:
    """Every TCP socket of the machine: (local port, remote port, established, inode)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, remote = fields[1].rsplit(":", 1)[1], fields[2].rsplit(":", 1)[1]
            yield int(local, 16), int(remote, 16), fields[3] == "01", fields[9]


def established_connections(pids: list[int], port: int) -> dict[int, int]:
    """Per process: established TCP connections on local ``port`` it holds (which worker
    of a shared listening socket accepted how many clients)."""
    owner = _socket_owners(pids)
    counts = dict.fromkeys(pids, 0)
    for local, _, established, inode in _tcp_sockets():
        holder = owner.get(inode)
        if established and local == port and holder is not None:
            counts[holder] += 1
    return counts


def connection_owner(pids: list[int], port: int, peer_port: int) -> int | None:
    """Which of ``pids`` holds the server side of the connection from local ``peer_port`` to
    ``port`` (None until one of them has accepted it)."""
    owner = _socket_owners(pids)
    for local, remote, _, inode in _tcp_sockets():
        if local == port and remote == peer_port:
            return owner.get(inode)
    return None


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in seconds (from /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / ticks, total / ticks


def cpu_by_command() -> dict[tuple[int, str], float]:
    """CPU seconds so far of every process on the machine, keyed by (pid, command name)."""
    found: dict[tuple[int, str], float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        fields = raw.rsplit(")", 1)[1].split()
        found[(int(entry.name), name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def busiest(
    before: dict[tuple[int, str], float], after: dict[tuple[int, str], float], seconds: float
) -> dict[str, float]:
    """Cores used per command name between two ``cpu_by_command`` snapshots (processes
    that ended in between are missing), busiest first."""
    per_name: dict[str, float] = {}
    for key, total in after.items():
        used = total - before.get(key, 0.0)
        if used > 0:
            per_name[key[1]] = per_name.get(key[1], 0.0) + used
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1])
    return {name: round(used / seconds, 2) for name, used in ranked[:6] if used / seconds >= 0.01}


#: Processes that serve the benchmark besides the app's servers (and kernel threads).
INFRASTRUCTURE = ("postgres", "redis-server")
KERNEL_THREADS = ("kworker", "ksoftirqd", "kdamond", "rcu_", "migration", "kswapd", "jbd2")


def infrastructure_cpu(
    before: dict[tuple[int, str], float], after: dict[tuple[int, str], float], seconds: float
) -> float:
    """Cores used meanwhile by PostgreSQL and Redis."""
    used = sum(
        total - before.get((pid, name), 0.0)
        for (pid, name), total in after.items()
        if name in INFRASTRUCTURE
    )
    return max(used, 0.0) / seconds


def foreign_cpu(
    before: dict[tuple[int, str], float],
    after: dict[tuple[int, str], float],
    seconds: float,
    ours: set[int],
) -> float:
    """Cores used meanwhile by processes that are not part of the benchmark (someone's test
    run, say): not the servers, not the database or Redis, not kernel threads."""
    used = 0.0
    for (pid, name), total in after.items():
        if pid in ours or name in INFRASTRUCTURE or name.startswith(KERNEL_THREADS):
            continue
        used += total - before.get((pid, name), 0.0)
    return round(max(used, 0.0) / seconds, 2)
