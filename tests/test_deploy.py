"""Dockerfile and docker-compose.yml, checked by reading them and by running their
commands directly (there is no Docker engine on CI machines)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.procs import start, stop
from tests.redis_cluster import LocalCluster
from tests.redisproc import RedisProc
from tests.test_serve import train_toy

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.search(r"^USER (\S+)", text, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert 'ENTRYPOINT ["optd"]' in text and 'CMD ["serve"]' in text
    assert "HEALTHCHECK" in text and "/readyz" in text


def test_compose_commands_run(tmp_path: Path) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    redis_cmd = services["redis"]["command"]
    flags = dict(zip(redis_cmd[1::2], redis_cmd[2::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    apis = [s for name, s in services.items() if name.startswith("api") and "profiles" not in s]
    assert len(apis) == 2 and {a["ports"][0] for a in apis} == {"8000:8000", "8001:8000"}
    for api in apis:
        assert api["command"] == ["serve"] and "/readyz" in " ".join(api["healthcheck"]["test"])
    # the compose file mounts deploy/keys.json: made by `optd keys create`, as documented
    keys = str(tmp_path / "keys.json")
    made = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--file", keys, "--tenant", "team"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    key = made.stdout.strip()
    caddy = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "reverse_proxy api-1:8000 api-2:8000" in caddy and "tls" in caddy
    with RedisProc(appendonly=True, appendfsync=flags["--appendfsync"]) as redis:
        procs = []
        for api in apis:
            env = {k: str(v) for k, v in api["environment"].items()}
            env["OPTD_REDIS_URL"] = env["OPTD_REDIS_URL"].replace(
                "redis:6379", f"127.0.0.1:{redis.port}"
            )
            assert env["OPTD_API_KEYS_FILE"] == api["volumes"][0].split(":")[1]
            env["OPTD_API_KEYS_FILE"] = keys
            env.pop("OPTD_PORT")
            env.pop("OPTD_ADVERTISE_URL")  # a name inside compose's network; learnt here
            env["OPTD_HOST"] = "127.0.0.1"  # tests bind loopback only
            procs.append(start(env))
        try:
            # both replicas serve the same sessions: train on one, read from the other
            assert httpx.get(procs[0][1] + "/v1/sessions").status_code == 401  # auth is on
            assert train_toy(procs[0][1], {"Authorization": f"Bearer {key}"}) < 1e-2
            listing = httpx.get(
                procs[1][1] + "/v1/sessions", headers={"Authorization": f"Bearer {key}"}
            ).json()["sessions"]
            assert len(listing) == 1 and listing[0]["step"] == 150
        finally:
            for proc, _ in procs:
                stop(proc)


def test_compose_cluster_profile_runs() -> None:
    """The `cluster` profile: six cluster nodes formed by `redis-cli --cluster create`
    (as its init job does) and two API replicas with the profile's environment."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = [s for n, s in services.items() if n.startswith("redis-node-")]
    assert len(nodes) == 6 and all(s["profiles"] == ["cluster"] for s in nodes)
    assert "--cluster-enabled" in nodes[0]["command"]
    init = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster create" in init and "--cluster-replicas 1" in init
    apis = [s for n, s in services.items() if n.startswith("api-cluster")]
    assert len(apis) == 2
    with LocalCluster() as cluster:
        procs = []
        for api in apis:
            env = {k: str(v) for k, v in api["environment"].items()}
            assert env["OPTD_REDIS_CLUSTER"] == "1" and env["OPTD_REDIS_WAIT_REPLICAS"] == "1"
            env.pop("OPTD_API_KEYS_FILE")  # auth is covered above; loopback here
            env["OPTD_REDIS_URL"] = cluster.url
            env.pop("OPTD_PORT")
            env.pop("OPTD_ADVERTISE_URL")
            env["OPTD_HOST"] = "127.0.0.1"
            procs.append(start(env))
        try:
            assert train_toy(procs[1][1]) < 1e-2
        finally:
            for proc, _ in procs:
                stop(proc)
