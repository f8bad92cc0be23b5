"""The component registry: every component is declared once and everything that runs components reads it."""

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY as METRICS

from mpaas import cli
from mpaas.component import REGISTRY, load, registered
from mpaas.resultcodes import ResultCode, doc_row
from mpaas.service import ComponentSettings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_every_registered_component_loads_under_its_own_name() -> None:
    components = registered()
    assert [c.name for c in components] == list(REGISTRY)
    assert len({c.dev_port for c in components}) == len(components), "two components share a dev port"
    for c in components:
        assert issubclass(c.settings, ComponentSettings), c.name
        assert c.summary and c.build is not None
    with pytest.raises(KeyError, match="no component 'nope'"):
        load("nope")


def test_every_component_is_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = capsys.readouterr().out
    for name in REGISTRY:
        assert re.search(rf"^\s+{name}\s", shown, re.M), f"`mpaas {name}` missing from the CLI"


@pytest.mark.parametrize("component", [c for c in registered() if c.codes], ids=lambda c: c.name)
def test_result_codes_are_unique_and_documented(component) -> None:  # type: ignore[no-untyped-def]
    codes = [c.code for c in component.codes]
    assert len(codes) == len(set(codes)) and codes == sorted(codes)
    doc = (ROOT / component.docs).read_text()
    for c in component.codes:
        assert isinstance(c, ResultCode)
        assert doc_row(c) in doc, f"{c.code} missing from {component.docs}"


def test_each_component_builds_in_directory_mode_and_names_its_metrics(tmp_path: Path) -> None:
    for c in registered():
        settings = c.settings(config_source="dir", config_dir=str(tmp_path))
        served = c.build(settings)
        assert served.app.state.live is served.live
    # Besides the components': the shared live config's, and the operator's when its modules are loaded too.
    prefixes = (*(c.metrics_prefix for c in registered()), "mpaas_config_", "mpaas_operator_")
    ours = [n for n in METRICS._names_to_collectors if n.startswith("mpaas_")]
    assert ours and all(n.startswith(prefixes) for n in ours), sorted(n for n in ours if not n.startswith(prefixes))


def test_workers_need_a_component_that_supports_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPAAS_WORKERS", "2")
    with pytest.raises(SystemExit, match="runs as one process per pod"):
        cli.run_component("delivery")
    with pytest.raises(SystemExit, match="needs MPAAS_REDIS_URL"):
        cli.run_component("gateway")


async def test_a_background_task_that_fails_takes_the_component_out_of_service() -> None:
    import asyncio

    import httpx

    from mpaas.service import component_app

    ran = asyncio.Event()

    async def steady() -> None:
        ran.set()
        await asyncio.Event().wait()

    async def broken() -> None:
        await ran.wait()
        raise RuntimeError("lost the store")

    app = component_app("probe", background={"steady": steady, "consumer": broken})
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["reason"] == "background task consumer stopped: RuntimeError('lost the store')"


async def test_a_protocol_server_runs_between_the_start_and_stop_hooks() -> None:
    """How a component serves a protocol of its own (WebSocket, file downloads) beside its HTTP app."""
    import httpx
    from aiohttp import web

    from conftest import free_port
    from mpaas.service import component_app

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="from the side server")

    site_app = web.Application()
    site_app.router.add_get("/", hello)
    runner = web.AppRunner(site_app)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    app = component_app("probe", on_start=[start], on_stop=[runner.cleanup])
    async with app.router.lifespan_context(app), httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "from the side server"
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


def test_every_metric_a_shipped_dashboard_queries_exists() -> None:
    import json

    registered()  # every component's modules imported: their metrics registered
    names = set(METRICS._names_to_collectors)
    for path in sorted((ROOT / "charts/mpaas-operator/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert exprs, path.name
        for expr in exprs:
            for metric in re.findall(r"\b(mpaas_[a-z0-9_]+)", expr):
                assert metric in names, f"{path.name} queries {metric}, which no component exports"
