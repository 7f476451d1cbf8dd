"""`optd serve`, `optd keys create`, `optd open` and `optd version`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

# One BLAS thread, set before numpy loads (app.cli itself imports none): the server's one
# BLAS call, the norm's dot products, ran 2.5x slower with OpenBLAS's default of a thread
# per core on a machine whose other cores are busy (its threads spin), and numpy's
# elementwise work never uses them. A value in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from app import __version__  # noqa: E402
from app.core.config import Settings  # noqa: E402


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
        ("max_json_mb", "OPTD_MAX_JSON_MB"),
        ("log_level", "OPTD_LOG_LEVEL"),
        ("body_timeout_s", "OPTD_BODY_TIMEOUT_S"),
        ("body_min_rate_kib", "OPTD_BODY_MIN_RATE_KIB"),
        ("keep_alive_s", "OPTD_KEEP_ALIVE_S"),
        ("limit_concurrency", "OPTD_LIMIT_CONCURRENCY"),
        ("owners", "OPTD_OWNERS"),
        ("owner_lease_s", "OPTD_OWNER_LEASE_S"),
        ("advertise_url", "OPTD_ADVERTISE_URL"),
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
    from app.main import announce, describe_store

    announce(describe_store(settings))
    from app.core.auth import KeyRing, auth_enabled

    try:
        ring = KeyRing.load(settings.api_keys_file, settings.api_keys)
    except ValueError as exc:
        print(f"optd: cannot start: {exc}", file=sys.stderr)
        return 2
    if auth_enabled(settings.auth, settings.host, ring) and not len(ring):
        print(
            f"optd: cannot start: binding {settings.host} turns auth on, but no API keys are "
            "configured. Create one with `optd keys create --file keys.json --tenant <name>` "
            "and set OPTD_API_KEYS_FILE=keys.json (or set OPTD_AUTH=off on a trusted network)",
            file=sys.stderr,
        )
        return 2
    if settings.redis_url is not None:
        from app.engine import Engine

        try:
            asyncio.run(Engine.check_store(settings))
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
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works (call_later)
        limit_concurrency=settings.limit_concurrency or None,
    )
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    """Add a key to a keys file (created if missing) and print the key, once."""
    import json
    from pathlib import Path

    from app.core.auth import TENANT_RE, entry_for, new_key

    if not TENANT_RE.fullmatch(args.tenant):
        print("optd: a tenant name is 1-64 of A-Z a-z 0-9 _ . -", file=sys.stderr)
        return 2
    path = Path(args.file)
    doc = json.loads(path.read_text()) if path.exists() else {"tenants": {}, "keys": []}
    _, key = new_key()
    doc.setdefault("keys", []).append(entry_for(args.tenant, key, admin=args.admin))
    doc.setdefault("tenants", {}).setdefault(args.tenant, {})
    # atomically (a temporary file renamed over the old one): running servers re-read
    # the file and must never see it half-written
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    print(key)
    print(
        f"added a {'admin ' if args.admin else ''}key for tenant {args.tenant!r} to {path}; "
        "the key is shown only now (the file keeps a salted hash)",
        file=sys.stderr,
    )
    return 0


def _open(args: argparse.Namespace) -> int:
    """Print a session's dashboard URL (or the sessions list's) and open it in a browser
    when this machine has one (`webbrowser` finds none on a headless server: print only)."""
    import webbrowser
    from urllib.parse import quote

    base = (args.url or os.environ.get("OPTD_URL") or "http://127.0.0.1:8000").rstrip("/")
    url = f"{base}/ui/sessions/{quote(args.session, safe='')}" if args.session else f"{base}/ui"
    print(url)
    if not args.print_only:
        try:
            webbrowser.get().open(url)
        except webbrowser.Error:
            pass  # no browser here: the printed URL is the answer
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
    serve.add_argument(
        "--max-json-mb", type=float, help="OPTD_MAX_JSON_MB: JSON bodies (default 64)"
    )
    serve.add_argument("--log-level", help="OPTD_LOG_LEVEL (default info)")
    serve.add_argument(
        "--body-timeout-s", type=float, help="OPTD_BODY_TIMEOUT_S: 408 for slower bodies (15)"
    )
    serve.add_argument(
        "--body-min-rate-kib",
        type=float,
        help="OPTD_BODY_MIN_RATE_KIB: KiB/s a long body must keep up (64; 0 = flat timeout)",
    )
    serve.add_argument(
        "--keep-alive-s", type=float, help="OPTD_KEEP_ALIVE_S: idle keep-alive connections (5)"
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        help="OPTD_LIMIT_CONCURRENCY: 503 beyond this many connections (0 = no limit)",
    )
    serve.add_argument(
        "--owners",
        choices=["auto", "redirect", "proxy", "off"],
        help="OPTD_OWNERS: send a session's requests to its owner process by 307 or by "
        "forwarding them (auto: redirect on Redis, off on the embedded store)",
    )
    serve.add_argument(
        "--owner-lease-s", type=float, help="OPTD_OWNER_LEASE_S: a session owner's lease (5)"
    )
    serve.add_argument(
        "--advertise-url",
        help="OPTD_ADVERTISE_URL: this process's URL in redirects (default http://host:port)",
    )
    sub.add_parser("version", help="print the version")
    opener = sub.add_parser("open", help="print and open a session's live dashboard (/ui)")
    opener.add_argument("session", nargs="?", help="a session id (none: the sessions list)")
    opener.add_argument("--url", help="the server (OPTD_URL, default http://127.0.0.1:8000)")
    opener.add_argument("--print-only", action="store_true", help="print the URL, open nothing")
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="add a key for a tenant and print it once")
    create.add_argument("--file", required=True, help="the keys file (OPTD_API_KEYS_FILE)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--admin", action="store_true", help="may see every tenant's sessions")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"optd {__version__}")
        return 0
    if args.command == "keys":
        return _keys_create(args)
    if args.command == "open":
        return _open(args)
    return _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
