"""What every component shares: settings, JSON logs with trace ids, health and metrics, serving.

A component is a FastAPI app built by `component_app`, which adds `/healthz`
(process alive), `/readyz` (config loaded, dependencies reachable) and
`/metrics` (Prometheus), and runs the component's start/stop hooks in the
lifespan. `serve` runs it (uvicorn; the gateway: `mpaas.http1`; HTTP/2:
hypercorn) with a graceful drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import tally

if TYPE_CHECKING:
    from .component import Served

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")


class ComponentSettings(BaseSettings):
    """Settings every component reads from `MPAAS_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="MPAAS_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8080
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Where resources come from: the Kubernetes API, or a folder of YAML (local/embedded mode).
    config_source: Literal["kube", "dir"] = "kube"
    config_dir: str = "examples/demo"
    namespace: str | None = None  # watch one namespace; None watches all the account may see
    kubeconfig: str | None = None
    # Seconds to keep serving in-flight requests after SIGTERM.
    drain_seconds: float = 10.0
    # Serve HTTP/2 (h2c, and h2 over TLS) besides HTTP/1.1 on the main port, through hypercorn.
    # Off by default: the HTTP/1.1 servers are faster (docs/benchmarks.md).
    http2: bool = False
    # Worker processes sharing the port (mpaas.workers), for a pod with more than one core.
    workers: int = Field(default=1, ge=1, le=64)
    reuse_port: bool = False  # set for each worker by the supervisor


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        tid = trace_id_var.get()
        if tid:
            out["traceId"] = tid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


Hook = Callable[[], Awaitable[None]]
ReadyCheck = Callable[[], Awaitable[tuple[bool, str]] | tuple[bool, str]]


def component_app(
    name: str,
    *,
    on_start: list[Hook] | None = None,
    on_stop: list[Hook] | None = None,
    ready: ReadyCheck | None = None,
    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with the platform's health, readiness and metrics endpoints.

    `on_start` hooks run in order before the first request, `on_stop` hooks in reverse after the last.
    `background` tasks (name -> coroutine function) run from start to stop; one that ends with an error is
    logged and turns readiness false (naming it), so the pod is taken out of its Service instead of serving
    half a component.
    """
    log = logging.getLogger(f"mpaas.{name}")
    failed: dict[str, str] = {}

    def watch(task_name: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            failed[task_name] = repr(task.exception())
            log.error("background task %s stopped", task_name, exc_info=task.exception())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in on_start or []:
            await hook()
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        for task_name, run in (background or {}).items():
            task: asyncio.Task[None] = loop.create_task(run(), name=f"{name}:{task_name}")
            task.add_done_callback(functools.partial(watch, task_name))
            tasks.append(task)
        app.state.started = True
        flusher = loop.create_task(tally.flush_forever())
        try:
            yield
        finally:
            flusher.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tally.flush()  # the last second's counts, into the files other workers' scrapes read
            for hook in reversed(on_stop or []):
                try:
                    await hook()
                except Exception:
                    log.exception("stop hook failed")

    app = FastAPI(title=f"mpaas {name}", lifespan=lifespan, **fastapi_kwargs)
    app.state.started = False
    app.state.draining = False

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "component": name}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, str]:
        ok, why = True, "ready"
        if app.state.draining:
            ok, why = False, "draining"
        elif failed:
            ok, why = False, "; ".join(f"background task {n} stopped: {e}" for n, e in sorted(failed.items()))
        elif ready is not None:
            res = ready()
            ok, why = (await res) if not isinstance(res, tuple) else res
        if not ok:
            response.status_code = 503
        return {"status": "ready" if ok else "not ready", "reason": why, "component": name}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        tally.flush()
        return Response(generate_latest(_metrics_registry()), media_type=CONTENT_TYPE_LATEST)

    return app


def _metrics_registry() -> Any:
    """This process's metrics, or with several workers (PROMETHEUS_MULTIPROC_DIR) all of theirs."""
    import os

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def serve(served: Served, settings: ComponentSettings) -> None:
    """Serve a component's app, plus its `extra` (app, host, port) servers in the same loop (an admin port).

    With a `router` (path -> handler, the gateway's RPC paths) every server is the
    lean HTTP/1.1 server of `mpaas.http1`; otherwise uvicorn; with `http2`
    hypercorn serves the main port. On SIGTERM readiness turns false, every server
    stops accepting, and in-flight requests get `drain_seconds` to finish.
    """
    import asyncio

    app, extra = served.app, served.extra
    if served.router is not None and not settings.http2:
        _serve_http1(served, settings)
        return

    import uvicorn

    def config(a: Any, host: str, port: int) -> uvicorn.Config:
        return uvicorn.Config(
            a,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=int(settings.drain_seconds) or None,
            lifespan="auto",
            loop="uvloop" if _has("uvloop") else "asyncio",
            http="httptools" if _has("httptools") else "h11",
        )

    servers = [] if settings.http2 else [uvicorn.Server(config(app, settings.host, settings.port))]
    servers += [uvicorn.Server(config(a, host, port)) for a, host, port in extra]
    h2_stop = asyncio.Event()

    def stop_all(sig: int, frame: Any) -> None:
        state = getattr(app, "state", None)
        if state is not None:
            state.draining = True
        for s in servers:
            s.should_exit = True
        h2_stop.set()

    for s in servers:  # whichever server caught the signal stops them all
        s.handle_exit = stop_all  # type: ignore[method-assign]

    async def main() -> None:
        tasks = [s.serve() for s in servers]
        if settings.http2:
            tasks.append(_serve_http2(app, settings, h2_stop, stop_all))
        await asyncio.gather(*tasks)

    _run(main())


def _serve_http1(served: Served, settings: ComponentSettings) -> None:
    from .http1 import Server, serve_forever

    app = served.app
    main = Server(
        app,
        settings.host,
        settings.port,
        router=served.router,
        body_limit=served.body_limit,
        reuse_port=settings.reuse_port,
    )
    servers = [main, *(Server(a, host, port) for a, host, port in served.extra)]

    def draining() -> None:
        state = getattr(app, "state", None)
        if state is not None:
            state.draining = True

    _run(serve_forever(servers, drain_seconds=settings.drain_seconds, on_stop=draining), fast_loop=served.uvloop)


# The cyclic garbage collector, tuned once a component is built: its imports (FastAPI, pydantic, the Kubernetes
# client, ...) are hundreds of thousands of objects every full collection walked again, and a request makes
# thousands of short-lived ones. Frozen, the startup objects are never walked; with a larger first generation the
# collector runs a fraction as often (reference counting frees the acyclic garbage either way). Measured on push's
# batch sends: 74 -> 44 µs of CPU a send (docs/benchmarks.md, "Push").
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run(main: Coroutine[Any, Any, None], *, fast_loop: bool = True) -> None:
    tune_gc()
    if fast_loop and _has("uvloop"):
        import uvloop

        uvloop.run(main)
    else:
        import asyncio

        asyncio.run(main)


async def _serve_http2(app: Any, settings: ComponentSettings, stop: Any, stop_all: Any) -> None:
    import asyncio
    import signal

    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    cfg = Config()
    cfg.bind = [f"{settings.host}:{settings.port}"]
    cfg.graceful_timeout = settings.drain_seconds
    cfg.accesslog = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all, sig, None)
    await hypercorn_serve(app, cfg, shutdown_trigger=stop.wait)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
