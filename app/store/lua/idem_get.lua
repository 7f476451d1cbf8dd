-- Read an idempotency record, but only while the session it was stored with exists: a
-- deleted session's records linger until their TTL, and a re-created session under the
-- same id has another incarnation (`@<inc>\n...`): neither is replayed.
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2]         optd:{sid}:idem:<hash of tenant and key>
-- Returns the stored value, or nil.
local inc = redis.call('HGET', KEYS[1], 'inc')
if not inc and redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local v = redis.call('GET', KEYS[2])
if v then
  local at = string.match(v, '^@([^\n]*)\n')
  if at and at ~= (inc or '') then
    return false
  end
end
return v
