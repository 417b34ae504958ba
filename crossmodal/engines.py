"""Where the encoding engine's work runs: in this process (``local``, the default) or
on a Ray cluster (``ray``, the optional extra ``crossmodal[ray]``).

An engine only decides *where* units of work run, never what they compute: a unit (a
batch of photo paths, one video) goes to a *worker*, made once per process by a factory
named as ``"module:function"`` with plain arguments, so a Ray actor on another machine
builds the same worker (the same model folder, runtime and preprocessing) as the local
path. Results come back to the caller, who commits them through the one index writer.

With Ray the units become a Ray Dataset, one row per unit, mapped by an actor pool of
``workers`` actors (the model loads once per actor); a row is one whole unit, so a
photo batch holds exactly the photos the local engine would put in it, and the outputs
are the same bits. Ray Data restarts an actor that dies and retries its unit, and
results stream back in order of completion, each tagged with its unit's position.

Ray is imported only here, and only when ``--engine ray`` is asked for, so ``--help``
and local search never load it.
"""
from __future__ import annotations

import importlib
import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .errors import InvalidInput, Unavailable

ENGINES = ("local", "ray")
RAY_EXTRA = 'pip install "crossmodal[ray]"'


@dataclass(frozen=True)
class EngineOptions:
    """Where encoding runs (plain data: the command line's ``--engine``, ``--ray-address``,
    ``--workers``)."""
    name: str = "local"
    #: a Ray cluster to join: ``auto`` (the one this machine belongs to), ``ray://host:port``
    #: or ``host:port``; None starts a Ray instance on this machine for the run
    ray_address: str | None = None
    #: encoding actors under Ray (None: one per CPU the cluster has, at most 8)
    workers: int | None = None

    def __post_init__(self):
        if self.name not in ENGINES:
            raise InvalidInput(f"unknown engine {self.name!r}; choose one of {', '.join(ENGINES)}")
        if self.workers is not None and self.workers < 1:
            raise InvalidInput(f"--workers must be at least 1 under --engine ray, got {self.workers}")


@dataclass(frozen=True)
class WorkerSpec:
    """How a process makes the function that runs one unit: ``factory(*args)`` returns
    ``unit -> result``. ``factory`` is ``"module:function"`` so any process can import it."""
    factory: str
    args: tuple = ()

    def build(self) -> Callable[[Any], Any]:
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(*self.args)


@dataclass(frozen=True)
class WorkerFailure:
    """A worker that could not start (the model folder missing on that node, another model
    there): what an actor returns for each of its units, for the driver to stop on with
    this line (raising in an actor's constructor would have Ray restart it without end)."""
    why: str


def model_for_workers(model) -> tuple[str, str]:
    """What a worker needs to load ``model`` itself: its folder and its fingerprint."""
    if model.source_dir is None:
        raise InvalidInput("--engine ray loads the model in every worker from its folder: save the model first")
    return str(model.source_dir), model.fingerprint()


def worker_model(model_dir: str, fingerprint: str):
    """The model a worker loads from ``model_dir``, refused unless it is the driver's."""
    from .model import CrossModalHasher

    model = CrossModalHasher.from_pretrained(model_dir)
    if model.fingerprint() != fingerprint:
        raise InvalidInput(f"the model at {model_dir} on this worker is not the driver's (fingerprint "
                           f"{model.fingerprint()}, expected {fingerprint}): install the same model on every node")
    return model


def local_map(spec: WorkerSpec | None, units: Sequence, run: Callable[[Any], Any] | None = None
              ) -> Iterator[tuple[int, Any]]:
    """Each unit's result in this process, in order: ``(position, result)``. ``run``: the
    worker already built here (a loaded model need not load again)."""
    run = run or spec.build()
    for position, unit in enumerate(units):
        yield position, run(unit)


def ray_map(spec: WorkerSpec, units: Sequence, options: EngineOptions,
            cpus_per_worker: float = 1.0) -> Iterator[tuple[int, Any]]:
    """Each unit's result from an actor pool on Ray: ``(position, result)`` in order of
    completion, every unit exactly once. Connects (or starts a local instance) first; see
    :func:`connect`. A worker that could not start stops the run in one line."""
    ray = connect(options)
    import ray.data

    _quiet_ray_logs()

    if not units:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.preserve_order = False  # results as they come: the writer keys items, order is not needed
    workers = options.workers or min(8, max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker)))
    rows = [{"position": i, "unit": pickle.dumps(u)} for i, u in enumerate(units)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    mapped = ds.map_batches(_UnitActor, fn_constructor_args=(pickle.dumps(spec),), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
                            num_cpus=cpus_per_worker, batch_format="numpy")
    seen: set[int] = set()
    for row in mapped.iter_rows():
        position, result = int(row["position"]), pickle.loads(row["result"])
        if isinstance(result, WorkerFailure):
            raise Unavailable(f"a Ray worker could not start: {result.why}; nothing of its work was written")
        if position in seen:
            raise RuntimeError(f"the Ray engine returned unit {position} twice")
        seen.add(position)
        yield position, result
    if len(seen) != len(units):
        raise RuntimeError(f"the Ray engine returned {len(seen)} of {len(units)} units")


class _UnitActor:
    """A Ray Data actor: builds the worker (``spec``: a pickled :class:`WorkerSpec`) once,
    then runs one unit per call; a worker that could not be built answers every unit with
    a :class:`WorkerFailure`."""

    def __init__(self, spec: bytes):
        try:
            self.run = pickle.loads(spec).build()
        except Exception as e:  # noqa: BLE001 — reported to the driver, which stops with it
            failure = WorkerFailure(f"{type(e).__name__}: {e}")
            self.run = lambda unit: failure

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        results = [pickle.dumps(self.run(pickle.loads(u))) for u in batch["unit"]]
        return {"position": np.asarray(batch["position"]), "result": np.array(results, dtype=object)}


def connect(options: EngineOptions):
    """The ``ray`` module, connected: to ``options.ray_address``, or to a Ray instance
    started on this machine for this process. Ray missing or an address that answers
    nothing is one :class:`Unavailable` line (before anything is written)."""
    try:
        import ray
    except ImportError:
        raise Unavailable(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    if ray.is_initialized():
        return ray
    address = options.ray_address
    kwargs = dict(log_to_driver=False, configure_logging=True, logging_level="ERROR")
    # the driver's core worker logs notes at error level on stderr (constructor arguments
    # kept for restarts); failures reach the command as exceptions, said in one line
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    _check_reachable(address)
    try:
        if address is None:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     object_store_memory=_local_object_store_bytes(), **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = f"--ray-address {address}" if address else "a local Ray instance"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Unavailable(f"could not reach {where} ({first}); start one with 'ray start --head' and pass its "
                          f"address, or leave out --ray-address to start one here; nothing was written") from None
    return ray


#: seconds to wait for a cluster's port before calling the address wrong (Ray itself retries
#: for a minute or more)
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str | None) -> None:
    """An address of the form ``[ray://]HOST:PORT`` must accept a connection within
    :data:`CONNECT_TIMEOUT_S`; ``auto`` and None are Ray's own to resolve."""
    import socket

    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"--ray-address {address}: give auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise Unavailable(f"--ray-address {address}: nothing answers there ({e.strerror or e}); start the cluster "
                          f"with 'ray start --head' and pass the address it prints, or leave out --ray-address to "
                          f"start Ray here; nothing was written") from None


def _quiet_ray_logs() -> None:
    """Ray Data logs every execution's plan and settings on stderr; a command prints its own
    summary, and failures reach it as exceptions."""
    import logging

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _local_object_store_bytes() -> int:
    """A local instance's shared-memory store: results are a few KB per unit, so a small
    store (Ray's default takes 30 % of memory) is plenty and leaves memory to the CNNs."""
    return 256 * 2 ** 20


def map_units(spec: WorkerSpec | None, units: Sequence, options: EngineOptions | None = None,
              cpus_per_worker: float = 1.0, local_run: Callable[[Any], Any] | None = None
              ) -> Iterator[tuple[int, Any]]:
    """Run ``spec``'s worker over ``units`` on the engine ``options`` names: ``(position,
    result)`` pairs, every unit exactly once (in order locally; as completed on Ray).
    ``local_run``: the same worker already built in this process, used by the local engine
    (``spec`` may then be None)."""
    options = options or EngineOptions()
    if options.name == "ray":
        return ray_map(spec, units, options, cpus_per_worker)
    return local_map(spec, units, local_run)
