#!/usr/bin/env bash
# The one test command: sets up what the tests need, then lint, type check, the suite.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k step    # extra args go to pytest
# Uses the active virtualenv if there is one, else creates/reuses ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    step "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi

step "installing optd (dev and examples extras) and the Python SDK with its torch adapter"
python -m pip install -q --disable-pip-version-check -e ".[dev,examples]" -e "./clients/python[torch]"

for tool in node npm go; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is missing: the SDK tests need Node.js 20 and Go (apt-get install -y golang-go)" >&2
    exit 1
  }
done

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing redis-server (the Redis tests start their own, never skipped)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  else
    echo "redis-server is missing: install it (sudo apt-get install -y redis-server) and rerun" >&2
    exit 1
  fi
fi

step "ruff"
ruff check .
ruff format --check .

step "mypy --strict app/"
mypy

step "pytest (server, Python SDK, examples)"
python -m pytest "$@"

step "benchmark smoke run (python -m bench --quick: every system answers correctly)"
python -m bench --quick
step "sync rounds smoke run (python -m bench.rounds --quick)"
python -m bench.rounds --quick
step "sharded sessions smoke run (python -m bench.shards --quick: every system the same bits)"
python -m bench.shards --quick

step "DiLoCo benchmark smoke run (python -m bench.diloco --quick: kill, join, bytes)"
python -m bench.diloco --quick

# The SDKs in other languages start this interpreter's `optd serve` in their tests.
export OPTD_PYTHON="$(command -v python)"

step "TypeScript SDK (npm ci, tsc, node --test)"
(cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && npm test)

step "Go SDK (gofmt, go vet, go test)"
(cd clients/go && test -z "$(gofmt -l .)" && go vet ./... && go test -count=1 ./...)

step "SDKs install from this checkout into scratch projects (npm install <dir>, npm pack; go replace)"
bash scripts/check_sdk_install.sh
