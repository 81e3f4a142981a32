"""The Ray engine of cohort prediction (``medseg predict RUN --manifest cohort.csv --out OUT --engine ray``; needs
``pip install medseg[ray]``, and Ray is imported only here).

Per study, the three stages of :mod:`medseg.inference.cohort_stages`, chained by object references so that
nothing passes through the driver but each study's status row:

- a CPU task reads and preprocesses the study (a fraction of a CPU each: ``cpus_per_task``);
- an actor runs the network: ``actors`` of them, each loading the model once (``Predictor.from_source``), with
  ``gpus_per_actor`` of a GPU (0.5 packs two on one GPU) and ``cpus_per_actor`` CPUs (its torch threads); a
  study goes to the actor with the fewest studies queued;
- a CPU task maps the probabilities back onto the study's grid, writes the label file into OUT and returns the row.

The driver (:func:`~medseg.inference.cohort.run_cohort`) writes the status, failures and log as rows come back, so
resuming works exactly as in-process. At most ``in_flight`` studies are submitted at a time (default two per
actor plus two), whatever the cohort's size: the memory a cluster holds for a cohort is bounded by that.

Faults: a study's own error comes back as its failure (never retried: it would fail again). A worker process that
dies is Ray's to redo: tasks are retried (``max_retries``) and a dead actor is restarted (reloading the model) with
its queued calls retried (``max_task_retries``); a study whose retries are exhausted is recorded as failed.

Inputs, RUN and OUT must be paths every node of the cluster sees at the same place (a shared file system), as they
are for one machine. Without ``address`` a local Ray instance is started, bound to the loopback interface.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import ConfigError
from medseg.inference.cohort_stages import Study, StudyFailed, finish_study, network_stage, prepare_study

log = logging.getLogger(__name__)

#: retries of a task or actor call whose worker died (not of a study's own error)
RETRIES = 3


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray", hint="pip install 'medseg[ray]'") from None
    return ray


def _use_token_if_available() -> None:
    """Ray 2.60 clusters started by ``ray start`` require the token ``~/.ray/auth_token`` (or ``RAY_AUTH_TOKEN``),
    but a driver connecting to one sends it only when token mode is on: turn it on when a token is there (as
    ``ray.init`` does for a local instance), unless ``RAY_AUTH_MODE`` says otherwise."""
    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # another Ray version: its own rules
        return
    quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


class NetworkActor:
    """Holds one predictor's network (loaded once) and runs :func:`network_stage` for the studies sent to it."""

    def __init__(self, source: tuple, threads: int):
        import torch

        from medseg.inference.predictor import Predictor

        torch.set_num_threads(max(1, threads))
        self.predictor = Predictor.from_source(source)

    def network(self, x):
        return network_stage(self.predictor, x)

    def pid(self) -> int:
        return os.getpid()


class RayEngine:
    """See the module doc. ``address``: ``None`` (a local instance on this machine's CPUs), ``"auto"`` (the cluster
    this machine belongs to, ``ray start``) or ``HOST:PORT``. Ray is connected on the first cohort and left as found:
    a Ray this engine started is shut down by :meth:`shutdown`."""

    def __init__(self, address: str | None = None, actors: int = 1, gpus_per_actor: float = 0.0,
                 cpus_per_actor: float = 1.0, cpus_per_task: float = 0.25, in_flight: int | None = None):
        if actors < 1:
            raise ConfigError(f"--actors {actors}: at least one actor runs the network")
        if gpus_per_actor < 0 or cpus_per_actor <= 0 or cpus_per_task <= 0:
            raise ConfigError("--gpus-per-actor must be 0 or more, --cpus-per-actor and the tasks' CPUs more than 0")
        self.address, self.actors, self.gpus_per_actor = address, actors, gpus_per_actor
        self.cpus_per_actor, self.cpus_per_task = cpus_per_actor, cpus_per_task
        self.in_flight = in_flight or 2 * actors + 2
        self._started = False
        self._pool: list = []
        self.actor_pids: list[int] = []  # of the cohort now running, once its actors have loaded the model

    def connect(self):
        ray = import_ray()
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
            try:
                if self.address:
                    _use_token_if_available()
                    ray.init(address=self.address, **options)
                else:
                    ray.init(_node_ip_address="127.0.0.1", **options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot connect to Ray at {self.address or 'a new local instance'}: {e}",
                                  hint="start one with `ray start --head`, or leave out --address for a local one") from None
            self._started = True
        try:
            self._check_resources(ray.cluster_resources())
        except ConfigError:
            self.shutdown()  # a local Ray started for nothing is not left running
            raise
        return ray

    def _check_resources(self, resources: dict) -> None:
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        need_cpus = self.actors * self.cpus_per_actor + self.cpus_per_task
        if need_cpus > cpus:
            raise ConfigError(f"{self.actors} actor(s) of {self.cpus_per_actor:g} CPU(s) leave no CPU for reading and writing "
                              f"on a cluster of {cpus:g} CPUs",
                              hint=f"use fewer --actors or a smaller --cpus-per-actor (at most {max(cpus - self.cpus_per_task, 0) / self.actors:.2f})")
        if self.actors * self.gpus_per_actor > gpus:
            raise ConfigError(f"{self.actors} actor(s) of {self.gpus_per_actor:g} GPU(s) need more GPUs than the cluster's {gpus:g}",
                              hint="use fewer --actors or a smaller --gpus-per-actor (0: on the CPU)")

    def pids(self) -> list[int]:
        """The process ids of the actors of the cohort now running (an actor call: it waits behind the queued ones)."""
        ray = import_ray()
        return ray.get([a.pid.remote() for a in self._pool])

    def __call__(self, predictor, studies: list[Study], out: Path, writer, quality: bool,
                 series_uid: str | None) -> Iterator[tuple[Study, dict | StudyFailed, dict]]:
        if predictor.source is None:
            raise ConfigError("the Ray engine needs a predictor made by Predictor.from_run or from_bundle")
        ray = self.connect()
        remote_actor = ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor, max_restarts=RETRIES,
                                  max_task_retries=RETRIES)(NetworkActor)
        prepare = ray.remote(num_cpus=self.cpus_per_task, max_retries=RETRIES, num_returns=2)(prepare_study)
        finish = ray.remote(num_cpus=self.cpus_per_task, max_retries=RETRIES)(finish_study)
        threads = max(1, round(self.cpus_per_actor))

        def start_actor():
            return remote_actor.remote(predictor.source, threads)

        self._pool = [start_actor() for _ in range(self.actors)]
        try:
            self.actor_pids = self.pids()  # once each has loaded the model
        except ray.exceptions.RayError as e:
            self._kill_pool(ray)
            raise ConfigError(f"the network actors could not start: {_first_line(e)}",
                              hint="check that medseg and the run are installed and readable on every node") from None
        replacements = RETRIES * self.actors  # actors that died for good and were replaced, at most
        queued = [0] * self.actors
        light, writer_ref = ray.put(predictor.without_network()), ray.put(writer)
        pending: dict = {}
        todo = iter(studies)

        def submit() -> bool:
            study = next(todo, None)
            if study is None:
                return False
            x, meta = prepare.remote(light, study, series_uid)
            a = queued.index(min(queued))
            queued[a] += 1
            net = self._pool[a].network.remote(x)
            pending[finish.remote(light, writer_ref, study, out, net, meta, quality)] = (study, a, self._pool[a])
            return True

        try:
            while len(pending) < self.in_flight and submit():
                pass
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=60)
                if not ready:
                    log.info("%d studies in flight, none finished in the last minute (does the cluster have the actors' "
                             "resources?)", len(pending))
                    continue
                study, a, actor = pending.pop(ready[0])
                queued[a] -= 1
                timings: dict = {}
                try:
                    row, timings = ray.get(ready[0])
                except ray.exceptions.RayTaskError:  # a stage raised what no study should (a bug): stop, as in-process
                    raise
                except ray.exceptions.RayActorError as e:  # the actor died more often than its calls were retried
                    row = StudyFailed(f"the network actor died and its retries ran out: {_first_line(e)}")
                    if actor is self._pool[a]:
                        if replacements == 0:
                            raise ConfigError("the network actors keep dying; the cohort stops (rerun to resume)",
                                              hint="see Ray's logs (e.g. out of memory: fewer --actors or --in-flight)") from None
                        replacements -= 1
                        ray.kill(actor, no_restart=True)
                        self._pool[a] = start_actor()
                except ray.exceptions.RayError as e:  # a task's worker or node lost more often than it was retried
                    row = StudyFailed(f"a Ray worker was lost and the retries ran out: {_first_line(e)}")
                submit()
                yield study, row, timings
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            self._kill_pool(ray)

    def _kill_pool(self, ray) -> None:
        for actor in self._pool:
            ray.kill(actor)
        self._pool = []

    def shutdown(self) -> None:
        if self._started:
            import_ray().shutdown()
            self._started = False
