"""A throwaway single-node SLURM cluster on localhost for tests: a private munged, slurmctld and
slurmd, every file (config, state, spool, logs, pid files, munge socket and key) in one temp dir.

`LocalSlurm.start()` returns the cluster or raises `Unavailable` with the reason (not root, a
daemon missing or refusing to start), so the test can skip saying why. Commands run against it
with `env` (SLURM_CONF). A job that `scontrol requeue`s itself waits for a begin time SLURM sets
about two minutes ahead; `release_held_jobs` (here run by a background thread, as an operator
would) starts it now.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "srun", "scontrol", "squeue", "sinfo", "scancel")


class Unavailable(Exception):
    """The cluster cannot run here; the message says why."""


class LocalSlurm:
    """A running single-node cluster; `stop()` ends its jobs and daemons and removes its files."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.released: list[str] = []
        self._releasing = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, cpus: int = 2) -> LocalSlurm:
        """Start munged, slurmctld and slurmd with a generated slurm.conf; wait for the node to be idle."""
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            raise Unavailable("the SLURM daemons run as SlurmUser=root here, and this test is not root")
        missing = [name for name in DAEMONS + COMMANDS if _which(name) is None]
        if missing:
            raise Unavailable(f"not installed: {', '.join(missing)} (Debian: apt-get install slurm-wlm munge)")
        cluster = cls(Path(tempfile.mkdtemp(prefix="temper-slurm-")))  # short: a socket path has ~107 bytes
        try:
            cluster._start_daemons(cpus)
        except Unavailable:
            cluster.stop()
            raise
        return cluster

    def _start_daemons(self, cpus: int) -> None:
        root, host = self.root, socket.gethostname()
        root.chmod(0o700)  # munged refuses a key or socket in a directory others can write
        for folder in ("state", "spool", "log"):
            (root / folder).mkdir()
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._daemon([_which("munged"), "--force", f"--socket={root / 'munge.sock'}", f"--key-file={key}",
                      f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
                      f"--seed-file={root / 'munged.seed'}"], root / "log" / "munged.log")
        ctld_port, slurmd_port = _free_port(), _free_port()
        self.conf.write_text(f"""\
ClusterName=tempertest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root / 'munge.sock'}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobRequeue=1
KillWait=5
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self._daemon([_which("slurmctld"), "-c"], root / "log" / "slurmctld.log")
        self._daemon([_which("slurmd")], root / "log" / "slurmd.log")
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise Unavailable(f"the node never became idle (sinfo says {state!r}); {self._log_tail('slurmctld.log')}")

    def _daemon(self, command: list[str], log: Path) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            raise Unavailable(f"{Path(command[0]).name} did not start ({said[-1] if said else result.returncode}); "
                              f"{self._log_tail(log.name)}")

    def _log_tail(self, name: str) -> str:
        path = self.root / "log" / name
        lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return f"{name}: {lines[-1] if lines else '(empty)'}"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM command against this cluster."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, Reason, ...); empty once SLURM forgot the job."""
        result = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        fields = {}
        for item in result.stdout.split():
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_until_ended(self, job_id: str, timeout: float) -> dict[str, str]:
        """Wait for a job to reach a final state (not pending, running, requeued or completing)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            fields = self.job(job_id)
            if fields.get("JobState") not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", None):
                return fields
            time.sleep(1)
        raise AssertionError(f"job {job_id} still {self.job(job_id).get('JobState')} after {timeout} s")

    def release_held_jobs(self, time_limit_minutes: int) -> None:
        """Start every job held for its begin time (a requeued job) now, with this time limit."""
        listing = self.run("squeue", "-h", "-t", "PD", "-o", "%i %r", check=False).stdout.split("\n")
        for line in listing:
            job_id, _, reason = line.strip().partition(" ")
            if reason == "BeginTime":
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", f"TimeLimit={time_limit_minutes}")
                self.released.append(job_id)

    def keep_releasing(self, time_limit_minutes: int) -> None:
        """Release held jobs every half second in a background thread until `stop()`."""
        def loop():
            while not self._releasing.wait(0.5):
                self.release_held_jobs(time_limit_minutes)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel every job, stop the daemons (by their pid files) and remove the cluster's files."""
        self._releasing.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if (self.root / "slurmctld.pid").exists():
            self.run("scancel", "--user=root", check=False)
            deadline = time.time() + 30
            while time.time() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            _terminate(self.root / f"{name}.pid")
        shutil.rmtree(self.root, ignore_errors=True)


def _terminate(pid_file: Path) -> None:
    """SIGTERM the daemon whose pid the file holds, and wait (up to 10 s) for it to exit."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _which(name: str) -> str | None:
    """A command's path; the daemons live in /usr/sbin, which a non-login PATH may lack."""
    found = shutil.which(name)
    return found or (str(Path("/usr/sbin", name)) if Path("/usr/sbin", name).exists() else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
