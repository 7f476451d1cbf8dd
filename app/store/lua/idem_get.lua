-- Read an idempotency record, but only while its session exists (a deleted session's
-- records linger until their TTL and must not be replayed).
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2]         optd:{sid}:idem:<hash>
-- Returns the encoded record, or nil.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
return redis.call('GET', KEYS[2])
