"""Work past one process: a :class:`concurrent.futures.Executor` on Ray, and the checks that let
dynamo's verbs hand their independent pieces (the starts of a search, the cells of a sweep) to any
executor.

dynamo never needs a particular executor: :func:`dynamo.find_fixed_points` and
:func:`dynamo.basin_graph` take any ``concurrent.futures.Executor`` (a thread pool, a process pool,
:class:`RayExecutor`), split their starts into shards, and merge the shards' results exactly as
the one-process run computes them.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import math
import os
import pickle
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ._validate import call_form
from .errors import InvalidArgumentError, MissingExtraError

__all__ = ["RayExecutor", "executor_workers", "ray_address_error"]

_RAY_EXTRA = "pip install 'looped-dynamo[ray]'"


def _import_ray(call: str) -> Any:
    """``ray``, or a :class:`MissingExtraError` that names the extra."""
    try:
        return importlib.import_module("ray")
    except ImportError as err:
        raise MissingExtraError(
            f"{call}: Ray is not installed ({err}); install the extra with {_RAY_EXTRA}, or use "
            "another executor (a concurrent.futures process or thread pool)"
        ) from None


def ray_address_error(address: str, timeout: float = 5.0) -> str | None:
    """Why a Ray cluster at ``address`` cannot be reached, or None when its port answers.

    ``ray.init(address=...)`` retries an unreachable address for about a minute before it fails;
    a TCP connection to the head's port says the same in at most ``timeout`` seconds. ``"auto"``
    (the cluster this machine runs, or ``RAY_ADDRESS``) and ``"local"`` are left to Ray.

    Parameters
    ----------
    address : str
        ``host:port``, or ``ray://host:port`` (Ray client).
    timeout : float
        Seconds to wait for the connection.

    Returns
    -------
    str or None

    Examples
    --------
    >>> from dynamo.kernel import ray_address_error
    >>> ray_address_error("localhost")
    "'localhost' is not host:port (e.g. 127.0.0.1:6379, or ray://host:10001)"
    >>> ray_address_error("auto") is None
    True
    """
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        return f"{address!r} is not host:port (e.g. 127.0.0.1:6379, or ray://host:10001)"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as err:
        return f"cannot connect to {host}:{port} ({err.strerror or err})"


def _pinned(fn: Callable[..., Any], threads: int) -> Callable[..., Any]:
    """``fn`` run with torch limited to ``threads`` intra-op threads (each task pins its own)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        import torch

        torch.set_num_threads(threads)
        return fn(*args, **kwargs)

    run.__name__ = getattr(fn, "__name__", "task")
    run.__qualname__ = getattr(fn, "__qualname__", run.__name__)
    return run


class RayExecutor(concurrent.futures.Executor):
    """A :class:`concurrent.futures.Executor` whose tasks run on a Ray cluster.

    ``submit(fn, *args)`` runs ``fn`` as a Ray task asking for ``num_cpus`` CPUs and ``num_gpus``
    GPUs (Ray places it on a node that has them and sets ``CUDA_VISIBLE_DEVICES``), with torch
    pinned to ``num_cpus`` threads; it returns a standard future. A task whose worker process
    dies (killed, out of memory, a lost node) is rerun up to ``max_retries`` times by Ray; an
    exception raised by ``fn`` itself is not retried and reaches the future.

    Ray is started lazily, on the first task: ``address=None`` starts a local instance with
    ``num_cpus_local`` CPUs (default: every core), ``"auto"`` joins the cluster this machine runs,
    ``"host:port"`` joins that cluster (checked to answer before Ray tries, so a wrong address is
    an error within seconds, not a minute of retries). If Ray is already initialised in this
    process, that instance is used as it is.

    Parameters
    ----------
    address : str, optional
    num_cpus : int
        CPUs per task; also torch's thread count inside it.
    num_gpus : float
        GPUs per task (fractions share a GPU).
    max_retries : int
        Reruns of a task whose worker died.
    num_cpus_local : int, optional
        CPUs of the local instance started when ``address`` is None.

    Examples
    --------
    >>> import dynamo as dy
    >>> ex = dy.RayExecutor(num_cpus=1)
    >>> ex.num_cpus, ex.address is None
    (1, True)
    >>> dy.RayExecutor(num_cpus=0)
    Traceback (most recent call last):
    ...
    dynamo.errors.InvalidArgumentError: RayExecutor(num_cpus=0): num_cpus must be an int >= 1
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int = 1,
        num_gpus: float = 0.0,
        max_retries: int = 3,
        num_cpus_local: int | None = None,
    ) -> None:
        defaults = {"address": None, "num_gpus": 0.0, "max_retries": 3, "num_cpus_local": None}
        given = {
            "address": address,
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "max_retries": max_retries,
            "num_cpus_local": num_cpus_local,
        }
        call = call_form(
            "RayExecutor",
            (),
            **{k: v for k, v in given.items() if k not in defaults or v != defaults[k]},
        )
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1:
            raise InvalidArgumentError(f"{call}: num_cpus must be an int >= 1")
        if (
            isinstance(num_gpus, bool)
            or not isinstance(num_gpus, (int, float))
            or not math.isfinite(num_gpus)
            or num_gpus < 0
        ):
            raise InvalidArgumentError(f"{call}: num_gpus must be a number >= 0, got {num_gpus!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidArgumentError(f"{call}: max_retries must be an int >= 0")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InvalidArgumentError(
                f"{call}: address must be 'host:port', 'auto', or None (a local instance)"
            )
        if num_cpus_local is not None and (
            isinstance(num_cpus_local, bool)
            or not isinstance(num_cpus_local, int)
            or num_cpus_local < 1
        ):
            raise InvalidArgumentError(f"{call}: num_cpus_local must be an int >= 1")
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = float(num_gpus)
        self.max_retries = max_retries
        self.num_cpus_local = num_cpus_local
        self._started = False  # this executor started Ray (and shuts it down)
        self._remotes: dict[int, tuple[Callable[..., Any], Any]] = {}
        self._lock = threading.Lock()
        self._shutdown = False

    def __repr__(self) -> str:
        return (
            f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus}, "
            f"num_gpus={self.num_gpus:g})"
        )

    def connect(self) -> Any:
        """Start or join Ray now (otherwise the first task does); returns the ``ray`` module.

        Raises
        ------
        MissingExtraError
            Ray is not installed.
        InvalidArgumentError
            The address does not answer, the cluster refuses the connection, or it lacks the
            GPUs each task asks for.
        """
        call = f"{self!r}"
        ray = _import_ray(call)
        with self._lock:
            if self._shutdown:
                raise RuntimeError(f"{call}: cannot schedule new futures after shutdown")
            if not ray.is_initialized():
                if self.address is not None:
                    why = ray_address_error(self.address)
                    if why is not None:
                        raise InvalidArgumentError(
                            f"{call}: no Ray cluster at {self.address}: {why}; start one "
                            "(`ray start --head`) and pass the address it prints, or omit the "
                            "address for a local instance"
                        )
                kwargs: dict[str, Any] = {
                    "log_to_driver": False,
                    "configure_logging": False,
                    "ignore_reinit_error": True,
                }
                if self.address is None:
                    kwargs["num_cpus"] = self.num_cpus_local or os.cpu_count() or 1
                    kwargs["include_dashboard"] = False
                try:  # "local": a new instance, even where RAY_ADDRESS or `ray start` left one
                    ray.init(address=self.address or "local", **kwargs)
                except Exception as err:  # Ray's own ConnectionError, AuthenticationError, ...
                    raise InvalidArgumentError(
                        f"{call}: Ray could not start or join the cluster: "
                        f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                    ) from None
                self._started = True
            # a task no node can hold would wait forever: refuse it now
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            cpus = max((float(r.get("CPU", 0.0)) for r in nodes), default=0.0)
            gpus = max((float(r.get("GPU", 0.0)) for r in nodes), default=0.0)
            if self.num_cpus > cpus:
                raise InvalidArgumentError(
                    f"{call}: each task asks for {self.num_cpus} CPU(s) but the largest node of "
                    f"the cluster has {cpus:g}; ask for fewer (num_cpus, or --threads)"
                )
            if self.num_gpus > gpus:
                raise InvalidArgumentError(
                    f"{call}: each task asks for {self.num_gpus:g} GPU(s) but the largest node "
                    f"of the cluster has {gpus:g}; pass num_gpus=0 to run on CPUs"
                )
        return ray

    @property
    def max_workers(self) -> int:
        """How many tasks the cluster runs at once: its CPUs over ``num_cpus`` (at least 1)."""
        ray = self.connect()
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // self.num_cpus))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as a Ray task; returns a ``concurrent.futures.Future``."""
        ray = self.connect()
        key = id(fn)
        with self._lock:
            entry = self._remotes.get(key)
            if entry is None or entry[0] is not fn:
                remote = ray.remote(_pinned(fn, self.num_cpus)).options(
                    num_cpus=self.num_cpus,
                    num_gpus=self.num_gpus,
                    max_retries=self.max_retries,
                    retry_exceptions=False,
                )
                entry = (fn, remote)
                self._remotes[key] = entry
        return entry[1].remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the local Ray instance if this executor started one, or disconnect from the
        cluster it joined (which keeps running)."""
        with self._lock:
            self._shutdown = True
            if self._started:
                ray = importlib.import_module("ray")
                ray.shutdown()
            self._started = False
            self._remotes.clear()


def executor_workers(executor: Any) -> int:
    """How many tasks ``executor`` runs at once, as far as it says (1 when it does not).

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from dynamo._executor import executor_workers
    >>> with ThreadPoolExecutor(max_workers=3) as ex:
    ...     executor_workers(ex)
    3
    """
    for name in ("max_workers", "_max_workers"):
        value = getattr(executor, name, None)
        if isinstance(value, int) and value >= 1:
            return value
    return 1


def check_executor(call: str, executor: Any) -> None:
    """``executor`` must have ``submit`` (a ``concurrent.futures.Executor``)."""
    if not callable(getattr(executor, "submit", None)):
        raise InvalidArgumentError(
            f"{call}: executor must be a concurrent.futures.Executor (a ThreadPoolExecutor, a "
            f"ProcessPoolExecutor, dynamo.RayExecutor), not {type(executor).__name__}"
        )


def dumps(call: str, obj: Any) -> bytes:
    """``obj`` as bytes for another process, by cloudpickle (which sends closures and locally
    defined modules by value, as a :class:`~dynamo.LoopedSystem` built from a module needs); an
    object it cannot send is an :class:`InvalidArgumentError` that says what to do."""
    import cloudpickle

    try:
        return cloudpickle.dumps(obj)  # type: ignore[no-any-return,unused-ignore]
    except Exception as err:
        raise InvalidArgumentError(
            f"{call}: the system cannot be sent to another process ({type(err).__name__}: "
            f"{err}); use a concurrent.futures.ThreadPoolExecutor, or build the system from "
            "objects that pickle"
        ) from None


def loads(payload: bytes) -> Any:
    """The object :func:`dumps` sent (run where the task runs)."""
    return pickle.loads(payload)  # our own payload, made by dumps() in this run
