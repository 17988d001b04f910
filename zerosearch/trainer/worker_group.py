"""Ray worker groups: one process per rank in a placement group, running the FSDP2 workers.

Each rank's process holds the policy worker (actor + reference + rollout engine, colocated) and, for PPO,
the critic worker. The controller calls methods on all ranks at once, either with the same arguments
(`call`) or with one shard of a batch per rank (`scatter`), and gathers the results in rank order.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, Sequence

import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.utils.errors import RunError
from zerosearch.utils.malloc import keep_freed_memory


class WorkerDiedError(RunError):
    """A rank's process or node died; the message names the rank, its node and what it was doing."""


_DEATH = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError)
# how long a rank's failure waits for Ray to declare a peer dead (a lost node takes its health-check period,
# about 15 s by default) so the error names the cause, not the echo
DEATH_GRACE_S = 40.0


def _first_death(pending: list[Any], timeout_s: float) -> tuple[Any, BaseException] | None:
    """The first of `pending` whose actor turns out dead within `timeout_s`, with its error; else None."""
    deadline = time.monotonic() + timeout_s
    pending = list(pending)
    while pending and (left := deadline - time.monotonic()) > 0:
        ready, pending = ray.wait(pending, num_returns=1, timeout=left)
        for ref in ready:
            try:
                ray.get(ref)
            except _DEATH as e:
                return ref, e
            except Exception:  # noqa: BLE001 - another echo of the same failure
                continue
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class RankStream:
    """One rank's side of continuous batching across Ray workers (`dispatch.WorkerGroupStream`): the rank
    engine's `GenerationStream`, advanced several decode steps per call, since a Ray round trip per decode
    step would cost more than the step itself at small sizes."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.stream: Any = None

    def open(self, params: Any) -> bool:
        self.close()
        self.stream = self.engine.open_stream(params)
        if self.stream is None:
            raise ValueError(f"the {type(self.engine).__name__} rollout engine has no continuous batching; "
                             "set rollout.async_batching=call")
        return True

    def step(self, adds: list[tuple[Any, list[int], int, int | None]], max_steps: int) -> tuple[list[Any], int]:
        """Add the new sequences, then decode until one finishes (or `max_steps`, or nothing is left).
        Returns the finished (key, output) pairs and the sequences still on this rank."""
        if self.stream is None:
            raise RuntimeError("stream_step before stream_open")
        for key, prompt, cap, seed in adds:
            self.stream.add(key, prompt, cap, seed)
        done: list[Any] = []
        for _ in range(max_steps):
            if not self.stream.active:
                break
            done += self.stream.step()
            if done:  # back to the controller at once: finished turns have searches to send
                break
        return done, self.stream.active

    def close(self) -> bool:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        return True


class RankInfo(NamedTuple):
    """Where a rank runs and how its process was set up: what the controller logs at start."""

    node_id: str
    ip: str
    pid: int
    malloc_note: str  # what trainer.cpu_malloc_tuning did ("" on GPU or when off)
    niceness: int


class RankWorker:
    """What runs inside one Ray actor process. Method names are the controller's vocabulary."""

    def __init__(self, cfg: ZeroSearchConfig, rank: int, world_size: int, device: str, threads: int):
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        torch.set_num_threads(max(1, threads))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # on CPU, freed activations stay mapped for the next step instead of being page-faulted back
        # (zerosearch.utils.malloc); said in the start-up log line of this rank either way
        self.malloc_note = ""
        if device == "cpu" and cfg.trainer.cpu_malloc_tuning:
            why_not = keep_freed_memory()
            self.malloc_note = ("malloc keeps freed memory" if why_not is None
                                else f"trainer.cpu_malloc_tuning not applied: {why_not}")
        self.policy: Any = None
        self.critic: Any = None
        self._stream: RankStream | None = None  # the rollout's continuous batch, between stream_open and _close

    def where(self) -> RankInfo:
        """Where this rank runs and how its process was set up: what is logged at start."""
        return RankInfo(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), os.getpid(),
                        self.malloc_note, os.nice(0))

    def master_address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), _free_port()

    def init(self, master_addr: str, master_port: int, model_path: str | None, with_critic: bool) -> bool:
        from transformers.utils import logging as hf_logging

        from zerosearch.workers import fsdp
        from zerosearch.workers.actor import PolicyWorker

        hf_logging.disable_progress_bar()
        fsdp.init_distributed(self.rank, self.world_size, master_addr, master_port, self.device)
        torch.manual_seed(self.cfg.trainer.seed)
        self.policy = PolicyWorker(self.cfg, self.rank, self.world_size, self.device, model_path=model_path)
        if with_critic:
            from zerosearch.workers.critic import CriticWorker

            self.critic = CriticWorker(self.cfg, self.rank, self.world_size, self.device)
        return True

    # policy
    def generate(self, prompts, params, max_new_tokens, seeds):  # noqa: ANN001 - types live in rollout.types
        return self.policy.generate(prompts, params, max_new_tokens, seeds)

    def stream_open(self, params) -> bool:  # noqa: ANN001
        self._stream = RankStream(self.policy.engine)
        return self._stream.open(params)

    def stream_step(self, adds, max_steps: int):  # noqa: ANN001
        if self._stream is None:
            raise RuntimeError("stream_step before stream_open")
        return self._stream.step(adds, max_steps)

    def stream_close(self) -> bool:
        return self._stream.close() if self._stream is not None else True

    def compute_log_prob(self, batch):  # noqa: ANN001
        return self.policy.compute_log_prob(batch)

    def compute_ref_log_prob(self, batch):  # noqa: ANN001
        return self.policy.compute_ref_log_prob(batch)

    def update_actor(self, batch):  # noqa: ANN001
        return self.policy.update_actor(batch)

    def sync_rollout_weights(self) -> bool:
        self.policy.sync_rollout_weights()
        return True

    def update_rollout_weights(self, state_dict) -> bool:  # noqa: ANN001
        self.policy.engine.update_weights(state_dict)
        return True

    # critic
    def compute_values(self, batch):  # noqa: ANN001
        return self.critic.compute_values(batch)

    def update_critic(self, batch):  # noqa: ANN001
        return self.critic.update_critic(batch)

    # checkpoints (zerosearch.trainer.checkpoint does the file work)
    def save_checkpoint(self, path: str) -> bool:
        from zerosearch.trainer.checkpoint import save_worker_state

        save_worker_state(path, self.policy, self.critic)
        return True

    def load_checkpoint(self, path: str) -> bool:
        from zerosearch.trainer.checkpoint import load_worker_state

        load_worker_state(path, self.policy, self.critic)
        return True

    def export_hf(self, path: str) -> bool:
        from zerosearch.trainer.checkpoint import export_hf_model

        export_hf_model(path, self.policy, self.rank)
        return True

    def shutdown(self) -> bool:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        return True


@dataclass
class Resources:
    """Where the ranks run: device, world size, CPUs per rank."""

    device: str
    world_size: int
    cpus_per_worker: int

    @classmethod
    def from_config(cls, cfg: ZeroSearchConfig, device: str) -> "Resources":
        t = cfg.trainer
        if device == "cuda":
            return cls("cuda", t.n_gpus_per_node * t.nnodes, 1)
        return cls("cpu", t.cpu_workers, t.cpu_threads_per_worker)


class WorkerGroup:
    """Creates the rank actors in a placement group and calls them together."""

    def __init__(self, cfg: ZeroSearchConfig, resources: Resources, model_path: str | None, with_critic: bool):
        self.resources = resources
        self._dead = False
        n = resources.world_size
        bundle = {"CPU": resources.cpus_per_worker}
        if resources.device == "cuda":
            bundle["GPU"] = 1
        # PACK (the default) keeps ranks on as few nodes as possible (NCCL inside a node is fastest); SPREAD
        # puts them on different nodes (trainer.placement_strategy)
        self.pg = placement_group([dict(bundle) for _ in range(n)], strategy=cfg.trainer.placement_strategy)
        ray.get(self.pg.ready(), timeout=300)
        actor_cls = ray.remote(RankWorker)
        env = {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(resources.cpus_per_worker)}
        self.workers = [
            actor_cls.options(
                num_cpus=resources.cpus_per_worker, num_gpus=1 if resources.device == "cuda" else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=self.pg,
                                                                     placement_group_bundle_index=i),
                runtime_env={"env_vars": env},
            ).remote(cfg, i, n, resources.device, resources.cpus_per_worker)
            for i in range(n)
        ]
        self.placement: list[RankInfo] = ray.get([w.where.remote() for w in self.workers])
        addr, port = ray.get(self.workers[0].master_address.remote())
        self._gather([w.init.remote(addr, port, model_path, with_critic) for w in self.workers], "init")

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def call(self, method: str, *args: Any) -> list[Any]:
        """Call `method(*args)` on every rank; results in rank order."""
        return self._gather([getattr(w, method).remote(*args) for w in self.workers], method)

    def describe(self, rank: int) -> str:
        p = self.placement[rank]
        return f"rank {rank} (node {p.node_id[:12]} at {p.ip}, pid {p.pid})"

    def setup_notes(self, rank: int) -> str:
        """The rank's process set-up worth a line: what `trainer.cpu_malloc_tuning` did, and a warning when
        it runs at a niceness other than 0 (a local cluster starts its workers at 0, `Trainer._init_ray`; a
        joined one keeps its own setting, by default Ray's 15). "" when there is nothing to say."""
        p = self.placement[rank]
        notes = [p.malloc_note] if p.malloc_note else []
        if p.niceness != 0:
            notes.append(f"niceness {p.niceness}: other processes on the node preempt this rank first (start the "
                         f"Ray cluster with RAY_worker_niceness=0 to run it at normal priority)")
        return "; ".join(notes)

    def _gather(self, refs: list[Any], method: str) -> list[Any]:
        """Results in rank order; a rank that died (its process or its node) raises WorkerDiedError naming it
        as soon as Ray knows, instead of waiting on the ranks still blocked in a collective with it."""
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(ready[0])
            except _DEATH as e:
                self._died(refs.index(ready[0]), method, e)
            except ray.exceptions.RayTaskError as e:
                # a collective whose peer died fails on the survivors first ("connection closed by peer"), before
                # Ray has declared the peer dead (seconds, or a node's health-check period): name the dead rank
                dead = _first_death(pending, DEATH_GRACE_S)
                if dead is None:
                    raise
                first = str(e).strip().splitlines()[-1][:200]
                self._died(refs.index(dead[0]), method, dead[1],
                           f" (rank {refs.index(ready[0])} then failed: {first})")
        return ray.get(refs)

    def _died(self, rank: int, method: str, e: BaseException, also: str = "") -> NoReturn:
        self._dead = True
        reason = " ".join(str(e).split())[:300]
        raise WorkerDiedError(
            f"{self.describe(rank)} died during {method}: {reason}{also}. The run stops; the last complete "
            "checkpoint is kept: run the same command again to continue from it (trainer.resume=auto).") from None

    def scatter(self, method: str, shards: Sequence[Any], *args: Any) -> list[Any]:
        """Call `method(shard_i, *args)` on rank i."""
        return self.scatter_args(method, [(s, *args) for s in shards])

    def scatter_args(self, method: str, per_rank_args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Call `method(*per_rank_args[i])` on rank i."""
        if len(per_rank_args) != len(self.workers):
            raise ValueError(f"{len(per_rank_args)} argument sets for {len(self.workers)} workers")
        return self._gather([getattr(w, method).remote(*a) for w, a in zip(self.workers, per_rank_args)], method)

    def shutdown(self) -> None:
        try:
            if not self._dead:  # after a lost rank the others may be stuck in a collective: kill them at once
                ray.get([w.shutdown.remote() for w in self.workers], timeout=30)
        except Exception:  # noqa: BLE001 - best effort; the actors are killed next
            pass
        for w in self.workers:
            ray.kill(w)
        remove_placement_group(self.pg)
