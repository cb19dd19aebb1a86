"""A one-node SLURM on this machine, for the cluster-submission test (root, no systemd).

Facts this relies on (Debian bookworm, slurm-wlm 22.05):
- Inside a job the executor plugin strips SLURM_* variables, so SLURM_CONF is lost: the config
  must live at /etc/slurm/slurm.conf. We refuse to overwrite one that we did not write.
- Without an accounting database sacct fails, so the test uses `--slurm-status-command squeue`,
  and MinJobAge=600 keeps finished jobs visible to squeue (the plugin wants >= 120 s).
- Fake GPUs (Gres=gpu:N, each backed by a copy of /dev/null) let the `gpu` resource be exercised: SLURM
  allocates them like real ones and sets CUDA_VISIBLE_DEVICES to the job's own.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CONF_DIR = Path("/etc/slurm")
MARKER = "# written by the lsbench test suite"
SPOOL = Path("/var/spool/lsbench-slurm")
LOG_DIR = Path("/var/log/lsbench-slurm")


def slurm_conf(hostname: str, cpus: int, memory_mb: int, gpus: int) -> str:
    return f"""{MARKER}
ClusterName=lsbench
SlurmctldHost={hostname}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={SPOOL}/ctld
SlurmdSpoolDir={SPOOL}/d
SlurmctldPidFile={SPOOL}/slurmctld.pid
SlurmdPidFile={SPOOL}/slurmd.pid
SlurmctldLogFile={LOG_DIR}/slurmctld.log
SlurmdLogFile={LOG_DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
ReturnToService=2
MpiDefault=none
GresTypes=gpu
NodeName=localhost NodeHostname={hostname} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    processes: list[subprocess.Popen] = field(default_factory=list)
    munged_pid: int | None = None

    def stop(self) -> None:
        """Stop every daemon we started, by PID."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.munged_pid is not None:
            try:
                os.kill(self.munged_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _write_config(cpus: int, memory_mb: int, gpus: int) -> None:
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text():
        raise RuntimeError(f"{conf} exists and was not written by this test suite; refusing to replace it")
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    conf.write_text(slurm_conf(socket.gethostname(), cpus, memory_mb, gpus))
    for d in (SPOOL / "ctld", SPOOL / "d", SPOOL / "gpu", LOG_DIR):
        d.mkdir(parents=True, exist_ok=True)
    devices = [SPOOL / "gpu" / f"nvidia{i}" for i in range(gpus)]
    for device in devices:  # character devices, as SLURM insists: copies of /dev/null (1, 3)
        if not device.is_char_device():
            device.unlink(missing_ok=True)
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (CONF_DIR / "gres.conf").write_text(MARKER + "\n" + "".join(
        f"NodeName=localhost Name=gpu File={device}\n" for device in devices))


def _start_munged() -> int:
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chown", "munge:munge", str(run_dir)], check=True)
    pid_file = run_dir / "munged.pid"
    if pid_file.exists():
        pid_file.unlink()
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)  # daemonises itself
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text().strip())
        time.sleep(0.1)
    raise RuntimeError("munged did not start")


def wait_for_idle_node(timeout: float = 600) -> None:
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
        state = out.stdout.strip()
        if state in ("idle", "mixed"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"SLURM node not idle after {timeout} s (state {state!r}); see {LOG_DIR}")


def start(cpus: int = 2, memory_mb: int = 8000, gpus: int = 2) -> Cluster:
    """Write the config, start munged, slurmctld and slurmd; return once the node is idle."""
    _write_config(cpus, memory_mb, gpus)
    cluster = Cluster(munged_pid=_start_munged())
    try:
        for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "localhost"]):
            cluster.processes.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1)
        wait_for_idle_node()
    except BaseException:
        cluster.stop()
        raise
    return cluster
