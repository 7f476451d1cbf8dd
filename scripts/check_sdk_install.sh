#!/usr/bin/env bash
# The TypeScript and Go SDKs install from this checkout the way their READMEs say, into
# projects outside it, and work: one optd serve, then in scratch directories
#   - `npm install <checkout>/clients/typescript` (a link) and the `npm pack` tarball,
#     each with a plain ESM script that imports @optd/client and takes one step;
#   - a Go module with `replace github.com/optd-dev/optd/clients/go => <checkout>`,
#     `go mod tidy` with GOPROXY=off (standard library only), go vet, go run one step.
# Called by scripts/test.sh; runs alone too (needs a Python that can import this `app`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${OPTD_PYTHON:-python}"
tmp="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(
  cd "$root"
  for v in $(compgen -e | grep '^OPTD_' || true); do unset "$v"; done
  exec "$python" -m app.cli serve --port "$port"
) >"$tmp/serve.log" 2>&1 &
server=$!
export OPTD_URL="http://127.0.0.1:$port"
for _ in $(seq 100); do
  if node -e 'fetch(process.env.OPTD_URL + "/readyz").then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))'; then
    break
  fi
  kill -0 "$server" 2>/dev/null || { cat "$tmp/serve.log" >&2; echo "optd serve exited" >&2; exit 1; }
  sleep 0.2
done

# SGD with lr 0.5 from w = [1, 2] with gradient [1, 1]: exactly [0.5, 1.5] at version 1.
cat >"$tmp/step.mjs" <<'EOF'
import { OptdClient } from "@optd/client";
const client = new OptdClient({ baseUrl: process.env.OPTD_URL });
const session = await client.createSession({ optimizer: "sgd", lr: 0.5, params: { w: [1, 2] } });
const { version, params } = await session.step({ w: [1, 1] });
const w = Array.from(params.w.data);
if (version !== 1 || w[0] !== 0.5 || w[1] !== 1.5) throw new Error(`unexpected step: ${version} ${w}`);
console.log("TypeScript SDK from", process.argv[2], "ok:", w);
EOF
npm_q=(--no-audit --no-fund --loglevel=error)
mkdir "$tmp/ts-link" "$tmp/ts-tgz"
(cd "$root/clients/typescript" && npm pack "${npm_q[@]}" --pack-destination "$tmp" >/dev/null)
for kind in link tgz; do
  dir="$tmp/ts-$kind"
  src="$root/clients/typescript"
  [ "$kind" = tgz ] && src="$(ls "$tmp"/optd-client-*.tgz)"
  (cd "$dir" && npm init -y >/dev/null && npm install "${npm_q[@]}" "$src" >/dev/null)
  cp "$tmp/step.mjs" "$dir/" && (cd "$dir" && node step.mjs "$kind")
done

# A directory `replace` does not check the module line of the target's go.mod: check it here.
gomod="$(cd "$root/clients/go" && go list -m)"
[ "$gomod" = github.com/optd-dev/optd/clients/go ] || { echo "clients/go/go.mod says module $gomod" >&2; exit 1; }
mkdir "$tmp/go-mod"
cat >"$tmp/go-mod/main.go" <<'EOF'
package main

import (
	"context"
	"fmt"
	"log"
	"os"

	optd "github.com/optd-dev/optd/clients/go"
)

func main() {
	ctx := context.Background()
	c := optd.NewClient(os.Getenv("OPTD_URL"))
	s, err := c.CreateSession(ctx, optd.CreateRequest{Optimizer: "sgd",
		Hyperparams: map[string]any{"lr": 0.5}, Params: optd.Tensors{"w": optd.NewTensor([]float32{1, 2})}})
	if err != nil {
		log.Fatal(err)
	}
	res, err := s.Step(ctx, optd.Tensors{"w": optd.NewTensor([]float32{1, 1})}, optd.StepOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if w := res.Params["w"].Data; res.Version != 1 || len(w) != 2 || w[0] != 0.5 || w[1] != 1.5 {
		log.Fatalf("unexpected step: %d %v", res.Version, w)
	}
	fmt.Println("Go SDK via replace ok:", res.Params["w"].Data)
}
EOF
(
  cd "$tmp/go-mod"
  export GOPROXY=off GOFLAGS=-mod=mod
  go mod init example.com/scratch >/dev/null 2>&1
  go mod edit -replace="github.com/optd-dev/optd/clients/go=$root/clients/go"
  go mod tidy
  go vet .
  go run .
)
