/** Session owners: the SDK follows 307s itself, remembers the owner per session, fails
 * over to its base URL on a network error, and bounds redirects. A fake fetch. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { OptdClient, RedirectLoopError } from "@optd/client";

const BASE = "http://optd.test";
const OWNER = "http://owner.test:9000";

interface Seen {
  url: string;
  headers: Headers;
  redirect: RequestRedirect | undefined;
}

function fake(answer: (url: URL, seen: Seen) => Response): { fetch: typeof fetch; seen: Seen[] } {
  const seen: Seen[] = [];
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const s = { url: String(input), headers: new Headers(init?.headers), redirect: init?.redirect };
    seen.push(s);
    return answer(new URL(String(input)), s);
  }) as typeof fetch;
  return { fetch: fetchImpl, seen };
}

const info = (id: string) =>
  new Response(JSON.stringify({ id, version: 3 }), { headers: { "content-type": "application/json" } });
const redirect = (url: URL) =>
  new Response(null, { status: 307, headers: { location: OWNER + url.pathname + url.search, "optd-owner": OWNER } });

test("follows a 307 to the owner and sends later requests straight there", async () => {
  const { fetch, seen } = fake((url) => (url.host === "optd.test" ? redirect(url) : info("s1")));
  const client = new OptdClient({ baseUrl: BASE, fetch, apiKey: "k" });
  await client.session("s1").info();
  await client.session("s1").info();
  assert.deepEqual(
    seen.map((s) => s.url),
    [`${BASE}/v1/sessions/s1`, `${OWNER}/v1/sessions/s1`, `${OWNER}/v1/sessions/s1`],
  );
  assert.equal(seen[1]!.headers.get("authorization"), "Bearer k"); // kept across origins
  assert.equal(seen[0]!.redirect, "manual");
  assert.equal(client.http.owner("s1"), OWNER);
});

test("a network error to the owner forgets it and asks the base URL at once", async () => {
  let ownerUp = true;
  const { fetch, seen } = fake((url, s) => {
    if (url.hostname === "owner.test") {
      if (!ownerUp) throw new TypeError("fetch failed");
      return info("s1");
    }
    return s.headers.get("optd-owner-unreachable") === OWNER ? info("s1") : redirect(url);
  });
  const client = new OptdClient({ baseUrl: BASE, fetch, backoffMs: 0 });
  await client.session("s1").info();
  ownerUp = false;
  await client.session("s1").info();
  assert.deepEqual(
    seen.map((s) => new URL(s.url).host),
    ["optd.test", "owner.test:9000", "owner.test:9000", "optd.test"],
  );
  assert.equal(client.http.owner("s1"), undefined);
});

test("a redirect loop is a RedirectLoopError", async () => {
  const { fetch, seen } = fake((url) => redirect(url));
  const client = new OptdClient({ baseUrl: BASE, fetch });
  await assert.rejects(client.session("s1").info(), RedirectLoopError);
  assert.equal(seen.length, 6);
});
