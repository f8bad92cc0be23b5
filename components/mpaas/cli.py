"""`mpaas`: one command, a subcommand per component (mpaas.component.REGISTRY).

    mpaas gateway | delivery | push | link | sync | analytics   run one component
    mpaas operator                                              run the operator
    mpaas dev [--simulate]                                      everything in one process
    mpaas simulate --gateway URL                                drive a gateway like a phone
    mpaas client-gen --openapi URL|FILE --lang typescript|kotlin typed client code for an app

Components take their settings from MPAAS_* environment variables (see
`mpaas.service.ComponentSettings`); flags here override the common ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from . import __version__
from .component import REGISTRY


def _examples_dir() -> str:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "demo"
        if candidate.is_dir():
            return str(candidate)
    return "examples/demo"


def _apply_common(args: argparse.Namespace) -> None:
    for flag, env in (("port", "MPAAS_PORT"), ("host", "MPAAS_HOST"), ("config_dir", "MPAAS_CONFIG_DIR")):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[env] = str(value)
    if getattr(args, "config_dir", None):
        os.environ["MPAAS_CONFIG_SOURCE"] = "dir"


def run_component(name: str) -> None:
    from pydantic import ValidationError

    from .component import load
    from .service import serve, setup_logging

    component = load(name)
    try:
        settings = component.settings()
    except ValidationError as e:
        raise SystemExit(f"mpaas {name}: invalid MPAAS_* settings:\n{e}") from None
    setup_logging(settings.log_level, settings.log_format)
    problem = component.check(settings)
    if problem:
        raise SystemExit(problem)
    if settings.workers > 1:
        if not component.workers:
            raise SystemExit(f"mpaas {name} runs as one process per pod: unset MPAAS_WORKERS")
        from .workers import supervise

        raise SystemExit(supervise(name, settings.workers, drain_seconds=settings.drain_seconds))
    serve(component.build(settings), settings)


def run_dev(args: argparse.Namespace) -> int:
    from .dev.platform import DevPlatform
    from .service import setup_logging
    from .simulator import run_demo

    setup_logging(args.log_level, "text")
    ports = {"gateway": args.port}

    async def main() -> int:
        platform = DevPlatform(args.config_dir, host=args.host, ports=ports)
        await platform.start()
        await asyncio.wait_for(platform.gateway.state.live.ready.wait(), 10)
        print(f"mpaas dev: platform up, resources from {args.config_dir}")
        for name in platform.ports:
            print(f"  {name:<13} {platform.url(name)}")
        try:
            if args.simulate:
                print()
                calls = await asyncio.to_thread(run_demo, platform.url("gateway"))
                ok = calls and calls[0].result_status == "1000"
                if args.exit_after_simulate:
                    return 0 if ok else 1
                print(
                    "\nplatform keeps running; Ctrl-C to stop. Edit the YAML under",
                    args.config_dir,
                    "and call again: changes apply live.",
                )
            await platform.wait()
        finally:
            await platform.stop()
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


def client_gen(args: argparse.Namespace) -> int:
    import json

    from .gateway import codegen

    if args.openapi.startswith(("http://", "https://")):
        import httpx

        doc = httpx.get(args.openapi, timeout=10).raise_for_status().json()
    else:
        doc = json.loads(Path(args.openapi).read_text())
    code = codegen.kotlin(doc, args.package) if args.lang == "kotlin" else codegen.typescript(doc)
    if args.out:
        Path(args.out).write_text(code)
        print(f"wrote {args.out}: {len(codegen.operations(doc))} operations", file=sys.stderr)
    else:
        sys.stdout.write(code)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mpaas", description="Kubernetes-native mobile backend platform")
    p.add_argument("--version", action="version", version=f"mpaas {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    from .component import load

    for name in REGISTRY:
        c = sub.add_parser(name, help=f"run {name}: {load(name).summary}")
        c.add_argument("--port", type=int)
        c.add_argument("--host")
        c.add_argument("--config-dir", help="read resources from this folder instead of the Kubernetes API")
        if name == "delivery":  # `mpaas delivery` runs the component; `mpaas delivery publish` releases a package
            from .delivery import publish

            publish.add_parser(c.add_subparsers(dest="action"))
    sub.add_parser("operator", help="run the operator (kopf)")
    d = sub.add_parser("dev", help="run the whole platform in one process with embedded defaults")
    d.add_argument("--config-dir", default=_examples_dir())
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080, help="gateway port")
    d.add_argument("--simulate", action="store_true", help="drive the gateway with the mobile-client simulator")
    d.add_argument("--exit-after-simulate", action="store_true")
    d.add_argument("--log-level", default="WARNING")
    g = sub.add_parser("client-gen", help="typed client code from a gateway's OpenAPI export")
    g.add_argument("--openapi", required=True, help="a file, or the admin URL /admin/openapi/<appId>")
    g.add_argument("--lang", choices=["typescript", "kotlin"], required=True)
    g.add_argument("--out", help="file to write (default: standard output)")
    g.add_argument("--package", default="io.mpaas.gateway", help="Kotlin package")
    s = sub.add_parser("simulate", help="call a gateway like a mobile app")
    s.add_argument("--gateway", default="http://127.0.0.1:8080")
    s.add_argument("--app-id", default="DEMO_APP")
    s.add_argument("--workspace-id", default="default")
    args = p.parse_args(argv)

    if args.command == "delivery" and getattr(args, "action", None) == "publish":
        from .delivery import publish

        return publish.run(args)
    if args.command in REGISTRY:
        _apply_common(args)
        run_component(args.command)
        return 0
    if args.command == "operator":
        from mpaas_operator.main import run

        return run()
    if args.command == "dev":
        return run_dev(args)
    if args.command == "client-gen":
        return client_gen(args)
    if args.command == "simulate":
        from .simulator import run_demo

        calls = run_demo(args.gateway, args.app_id, args.workspace_id)
        return 0 if calls and calls[0].result_status == "1000" else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
