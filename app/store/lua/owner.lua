-- A session's owner lease (DESIGN §4 "Session owners"): KEYS[1] = optd:{sid}:owner,
-- ARGV[1] = the claimant ("<advertised url> <process id>"), ARGV[2] = the lease in ms.
-- Free or already ours: (re)take it for ARGV[2] ms. Held by another: leave it.
-- Returns {holder, milliseconds left}. One script both claims and renews.
-- KEYS[2] = optd:{sid}:meta: a session that does not exist has no owner ({'', 0}: the
-- request is served where it arrived, e.g. a 404), so no lease outlives its session
-- (delete.lua unlinks the lease with the rest).
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'', 0}
end
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], tonumber(ARGV[2])}
end
return {holder, redis.call('PTTL', KEYS[1])}
