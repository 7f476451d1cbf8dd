-- Claim an idempotency key for a request about to run.
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2]         optd:{sid}:idem:<hash>
-- ARGV[1]         the in-flight marker: 'inflight:' .. fingerprint
-- ARGV[2]         marker TTL in milliseconds (a crashed request frees the key after it)
-- Returns {-1} (no session) | {1, value} (a record or another marker exists) | {0} (claimed).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local v = redis.call('GET', KEYS[2])
if v then
  return {1, v}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {0}
