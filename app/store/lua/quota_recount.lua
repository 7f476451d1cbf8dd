-- Replace a tenant's usage with a recount of its live sessions, unless the usage changed
-- since the recount began (its gen moved on): then the recount may have missed that change.
--
-- KEYS[1]   optd:tenant:{<tenant>}:usage
-- ARGV[1]   the gen quota_gen.lua returned;  ARGV[2] sessions;  ARGV[3] bytes
-- Returns 1 (replaced) or 0 (discarded).
if tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'sessions', ARGV[2], 'bytes', ARGV[3], 'pending', 0)
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return 1
