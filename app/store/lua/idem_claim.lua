-- Claim an idempotency key for a request about to run.
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2]         optd:{sid}:idem:<hash of tenant and key>
-- ARGV[1]         the in-flight marker: 'inflight:<fingerprint>:<owner>'
-- ARGV[2]         its lease in milliseconds: the owner renews it while the request runs
--                 (idem_renew.lua), so a dead owner's claim frees the key within a lease
-- Returns {-1} (no session) | {1, value} (a record or another's marker) | {0} (claimed).
-- A record stored under another incarnation of the session (`@<inc>\n...`: it was
-- deleted and re-created since) belongs to a session that no longer exists: ignored.
local inc = redis.call('HGET', KEYS[1], 'inc')
if not inc and redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local v = redis.call('GET', KEYS[2])
if v then
  local at = string.match(v, '^@([^\n]*)\n')
  if not at or at == (inc or '') then
    return {1, v}
  end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {0}
