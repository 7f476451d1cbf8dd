"""`optd serve` and `optd version`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from app import __version__
from app.core.config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    # Flags mirror OPTD_* settings; set them in the environment so worker processes
    # (uvicorn --workers) build the same Settings.
    for flag, env in (
        ("host", "OPTD_HOST"),
        ("port", "OPTD_PORT"),
        ("workers", "OPTD_WORKERS"),
        ("redis_url", "OPTD_REDIS_URL"),
        ("max_body_mb", "OPTD_MAX_BODY_MB"),
        ("log_level", "OPTD_LOG_LEVEL"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[env] = str(value)
    if args.redis_cluster:
        os.environ["OPTD_REDIS_CLUSTER"] = "1"
    if args.redis_wait_replicas is not None:
        os.environ["OPTD_REDIS_WAIT_REPLICAS"] = str(args.redis_wait_replicas)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger("optd")
    from app.main import describe_store

    log.info(describe_store(settings))
    if settings.redis_url is not None:
        from app.store import open_store

        async def check() -> None:
            store = open_store(settings.redis_url, cluster=settings.redis_cluster)
            try:
                await store.ping()
            finally:
                await store.close()

        try:
            asyncio.run(check())
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot start"
            detail = getattr(exc, "detail", str(exc))
            print(f"optd: cannot start: {detail}", file=sys.stderr)
            return 2
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="optd", description="optimizer-as-a-service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="bind address (OPTD_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (OPTD_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (OPTD_WORKERS)")
    serve.add_argument("--redis-url", help="Redis URL (OPTD_REDIS_URL); unset = embedded store")
    serve.add_argument("--redis-cluster", action="store_true", help="OPTD_REDIS_CLUSTER=1")
    serve.add_argument(
        "--redis-wait-replicas",
        type=int,
        help="OPTD_REDIS_WAIT_REPLICAS: acknowledge a step once N replicas have it",
    )
    serve.add_argument("--max-body-mb", type=float, help="OPTD_MAX_BODY_MB (default 512)")
    serve.add_argument("--log-level", help="OPTD_LOG_LEVEL (default info)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"optd {__version__}")
        return 0
    return _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
