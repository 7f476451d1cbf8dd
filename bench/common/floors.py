"""The floors bench/service/run.py divides optd's step latency by.

Run as `python -m bench.common.floors --port P [--redis-url URL]` (uvicorn, same defaults as
`optd serve`: uvloop and httptools when installed, one process, no access log).

- `POST /echo`: the body back, byte for byte, with the request's content type. No server
  can answer a step faster than it can take the gradient in and send as many bytes out.
- `POST /echo_redis/{sid}`: the same echo plus the least Redis work a durable step of a
  stateless API process could do: ONE pipeline (no MULTI) that GETs the session's three
  state arrays (params, exp_avg, exp_avg_sq) and SETs three arrays of the same size (the
  ones the previous call read, so no bytes are produced here) - every state byte crosses
  the loopback twice, in one round trip. `PUT /state/{sid}?n=` seeds them (n float32s),
  `DELETE /state/{sid}` drops them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from redis.asyncio import Redis
from starlette.responses import Response

SLOTS = ("param", "exp_avg", "exp_avg_sq")


def _keys(sid: str) -> list[str]:
    return [f"floor:{{{sid}}}:{slot}" for slot in SLOTS]


def create_app(redis_url: str | None = None) -> FastAPI:
    held: dict[str, list[bytes]] = {}
    client: list[Redis] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if redis_url is not None:
            r = Redis.from_url(redis_url, socket_timeout=60.0, socket_connect_timeout=2.0)
            await r.ping()
            client.append(r)
        try:
            yield
        finally:
            for r in client:
                await r.aclose()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    def media(request: Request) -> str:
        return request.headers.get("content-type", "application/octet-stream")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=media(request))

    @app.put("/state/{sid}")
    async def seed(sid: str, n: int) -> Response:
        values = [os.urandom(4 * n) for _ in SLOTS]
        pipe = client[0].pipeline(transaction=False)
        for key, value in zip(_keys(sid), values, strict=True):
            pipe.set(key, value)
        await pipe.execute()
        held[sid] = values
        return Response(status_code=204)

    @app.delete("/state/{sid}")
    async def drop(sid: str) -> Response:
        held.pop(sid, None)
        await client[0].delete(*_keys(sid))
        return Response(status_code=204)

    @app.post("/echo_redis/{sid}")
    async def echo_redis(sid: str, request: Request) -> Response:
        body = await request.body()
        keys = _keys(sid)
        pipe = client[0].pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        for key, value in zip(keys, held[sid], strict=True):
            pipe.set(key, value)
        reply = await pipe.execute()
        held[sid] = reply[: len(SLOTS)]
        return Response(body, media_type=media(request))

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.redis_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
