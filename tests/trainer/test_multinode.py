"""Multi-node training on a real Ray cluster of two nodes on this machine, started the way the README says
(`ray start --head` and `ray start --address`, each node with its own CPUs), with the ranks SPREAD over
the nodes.

1. A 2-step CPU run on the cluster places rank 0 and rank 1 on different nodes (from Ray's own placement,
   logged by the trainer) and gives exactly the single-node run's metrics (same seeds; CPU is deterministic).
2. The worker node is stopped (its processes SIGKILLed) in the middle of a run: the driver exits within 60 s
   with one error line naming the lost rank and its node; with the node back, the same command resumes from
   the last checkpoint and ends as the uninterrupted run.

Marked slow (two Ray nodes and four short trainings take minutes on 2 cores): run it with
`pytest tests/trainer/test_multinode.py -m slow`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from trainer_fixtures import make_assets, metrics_by_step, run_overrides

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _own_ports() -> list[str]:
    """Two Ray nodes share this machine (and others' tests run beside): give each its own ports. On real
    machines the defaults do."""
    return [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]


class RayCluster:
    """`ray start --head` plus `ray start --address` nodes as child process groups (never `ray stop`, which
    would stop every Ray on the machine)."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir, self.port = env, log_dir, _free_port()
        self.temp = tempfile.mkdtemp(prefix="zsr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.nodes: list[subprocess.Popen] = []
        self.address = ""

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        p = subprocess.Popen([RAY, "start", "--block", "--num-cpus=2", "--disable-usage-stats", *args, *_own_ports()],
                             env=self.env, start_new_session=True, stdout=open(self.log_dir / f"{name}.log", "w"),
                             stderr=subprocess.STDOUT)
        self.nodes.append(p)
        return p

    def start_head(self) -> None:
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--ray-client-server-port={_free_port()}", f"--temp-dir={self.temp}"], "head")
        log = self.log_dir / "head.log"
        deadline = time.monotonic() + 120
        while not (m := re.search(r"ray start --address='([\d.]+:\d+)'", log.read_text())):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        self.address = m.group(1)

    def add_node(self, name: str) -> subprocess.Popen:
        return self._start([f"--address={self.address}"], name)

    def wait_for_nodes(self, n: int) -> list[str]:
        """Node ids of the alive nodes once there are n of them, the head's first."""
        code = ("import json, ray; ray.init(address=%r, log_to_driver=False); print(json.dumps(sorted("
                "[(not 'node:__internal_head__' in x['Resources'], x['NodeID']) for x in ray.nodes() if x['Alive']])))"
                % self.address)
        deadline = time.monotonic() + 120
        while True:
            r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
            ids = [i for _, i in json.loads(r.stdout.splitlines()[-1])] if r.returncode == 0 else []
            if len(ids) == n:
                return ids
            assert time.monotonic() < deadline, r.stderr[-3000:]
            time.sleep(1)

    @staticmethod
    def stop(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the node's raylet, object store, agents and Ray workers
        except ProcessLookupError:
            pass
        p.wait(timeout=30)

    def shutdown(self) -> None:
        for p in reversed(self.nodes):
            self.stop(p)


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", "RAY_DISABLE_USAGE_STATS": "1",
           # Ray 2.60 turns token authentication on for `ray start --head`: every node and driver shares a token
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex(),
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for k in ("ZS_FAILPOINT", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


_metrics = metrics_by_step


def _placement(text: str) -> dict[int, str]:
    return {int(r): n for r, n in re.findall(r"^\[workers\] rank (\d) \(node (\w+) at ", text, re.M)}


def test_two_node_cluster_matches_one_node_and_survives_losing_a_node(tmp_path):
    a = make_assets(tmp_path / "assets")
    env = _env()

    def overrides(out: Path, *extra: str) -> list[str]:
        return run_overrides(a, out, "grpo", steps=2) + [
            "trainer.val_before_train=false", "trainer.test_freq=0", "logging.backends=[console,jsonl]", *extra]

    single = subprocess.run([sys.executable, "-m", "zerosearch.train", *overrides(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]

    cluster = RayCluster(env, tmp_path)
    try:
        cluster.start_head()
        worker = cluster.add_node("worker")
        head_id, worker_id = cluster.wait_for_nodes(2)
        on_cluster = [f"trainer.ray_address={cluster.address}", "trainer.placement_strategy=SPREAD"]

        # 1. ranks on different nodes, the same numbers as on one node
        multi = subprocess.run([sys.executable, "-m", "zerosearch.train", *overrides(tmp_path / "multi", *on_cluster)],
                               env=env, capture_output=True, text=True, timeout=900)
        assert multi.returncode == 0, multi.stderr[-3000:]
        placed = _placement(multi.stdout)
        assert sorted(placed) == [0, 1] and placed[0] != placed[1], multi.stdout[-3000:]
        assert {head_id[:12], worker_id[:12]} == set(placed.values())
        ref, got = _metrics(tmp_path / "single"), _metrics(tmp_path / "multi")
        assert sorted(got) == sorted(ref) == [1, 2]
        for step in (1, 2):
            diff = {k: (ref[step][k], got[step].get(k)) for k in ref[step] if ref[step][k] != got[step].get(k)}
            assert not diff, f"step {step} differs on two nodes: {diff}"
        s_ref = json.loads((tmp_path / "single" / "summary.json").read_text())
        s_got = json.loads((tmp_path / "multi" / "summary.json").read_text())
        assert s_got["final_val"] == s_ref["final_val"]

        # 2. the worker node is lost mid-run: a clear error within 60 s, then resume with the node back
        out = tmp_path / "lost"
        proc = subprocess.Popen([sys.executable, "-m", "zerosearch.train", *overrides(out, *on_cluster)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        placed, lost_at = {}, None
        for line in proc.stdout:
            placed.update(_placement(line))
            if line.startswith("[checkpoint] saved") and line.rstrip().endswith("step_000001"):
                cluster.stop(worker)  # mid-run: step 2 is starting
                lost_at = time.monotonic()
                break
        assert lost_at is not None, proc.stderr.read()[-3000:]
        _, err = proc.communicate(timeout=300)
        took = time.monotonic() - lost_at
        lost_rank = next(r for r, n in placed.items() if n == worker_id[:12])
        assert proc.returncode == 1, err[-3000:]
        assert re.search(rf"^error: rank {lost_rank} \(node {worker_id[:12]} at [\d.]+, pid \d+\) died during \w+",
                         err, re.M), err[-3000:]
        assert took < 60, took
        print(f"node lost: the driver exited {took:.1f} s later")

        cluster.add_node("worker2")
        cluster.wait_for_nodes(2)
        resumed = subprocess.run([sys.executable, "-m", "zerosearch.train", *overrides(out, *on_cluster)], env=env,
                                 capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resumed from {out / 'checkpoints' / 'step_000001'}" in resumed.stdout
        assert _metrics(out)[2] == ref[2]
    finally:
        cluster.shutdown()
