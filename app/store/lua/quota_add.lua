-- Add to a tenant's usage unless an increase would pass a limit.
--
-- KEYS[1]   optd:tenant:{<tenant>}:usage   hash: sessions, bytes
-- ARGV[1]   sessions delta;  ARGV[2] bytes delta
-- ARGV[3]   max sessions (-1: none);  ARGV[4] max bytes (-1: none)
-- Returns 1 (applied) or 0 (refused, nothing changed).
local ds, db = tonumber(ARGV[1]), tonumber(ARGV[2])
local s = tonumber(redis.call('HGET', KEYS[1], 'sessions') or '0') + ds
local b = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0') + db
if ds > 0 or db > 0 then
  local ms, mb = tonumber(ARGV[3]), tonumber(ARGV[4])
  if (ms >= 0 and s > ms) or (mb >= 0 and b > mb) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'sessions', math.max(s, 0), 'bytes', math.max(b, 0))
return 1
