-- Where a recount of a tenant's usage may start: the usage's generation, or -1 while a
-- write that changes the usage is in flight (charged, its session not yet changed), which
-- a listing of the sessions would miss. A pending count left by a process that died
-- mid-write stops blocking recounts after ARGV[1] ms without any change.
--
-- KEYS[1]   optd:tenant:{<tenant>}:usage
-- ARGV[1]   ms after which a pending count is considered abandoned
local cur = redis.call('HMGET', KEYS[1], 'gen', 'pending', 'pending_at')
local pending = tonumber(cur[2] or '0')
if pending > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now - tonumber(cur[3] or '0') < tonumber(ARGV[1]) then
    return -1
  end
end
return tonumber(cur[1] or '0')
