-- Add to a tenant's usage unless an increase would pass a limit.
--
-- KEYS[1]   optd:tenant:{<tenant>}:usage   hash: sessions, bytes, gen, pending, pending_at
-- ARGV[1]   sessions delta;  ARGV[2] bytes delta
-- ARGV[3]   max sessions (-1: none);  ARGV[4] max bytes (-1: none)
-- ARGV[5]   pending delta: +1 when a write that changes the usage starts (the usage is
--           charged before the session changes), -1 when it has landed or failed
-- Every applied change bumps `gen`, so a recount that saw an older gen is discarded
-- (quota_recount.lua). Returns 1 (applied) or 0 (refused, nothing changed).
local ds, db, dp = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local cur = redis.call('HMGET', KEYS[1], 'sessions', 'bytes', 'pending')
local s = tonumber(cur[1] or '0') + ds
local b = tonumber(cur[2] or '0') + db
if ds > 0 or db > 0 then
  local ms, mb = tonumber(ARGV[3]), tonumber(ARGV[4])
  if (ms >= 0 and s > ms) or (mb >= 0 and b > mb) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'sessions', math.max(s, 0), 'bytes', math.max(b, 0))
redis.call('HINCRBY', KEYS[1], 'gen', 1)
if dp ~= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'pending', math.max(tonumber(cur[3] or '0') + dp, 0),
    'pending_at', now)
end
return 1
