-- Add one point to a session's history (app/store/history.py says what the two sets are;
-- this is the same algorithm). Nothing is written for a session that is gone (a step
-- racing a DELETE leaves no orphan keys); the history keys live exactly as long as meta.
-- It also keeps the bytes the points hold (each copy counted) and how much of that the
-- tenant was charged: when the bytes pass the charge, the charge grows by whole blocks and
-- the growth is returned, for the engine to add to the tenant's usage (DESIGN §8).
--
-- KEYS[1] optd:{sid}:meta   KEYS[2] optd:{sid}:hist   KEYS[3] optd:{sid}:hist:tail
-- KEYS[4] optd:{sid}:hist:stride   KEYS[5] optd:{sid}:hist:acct (bytes, charged)
-- ARGV[1] version   ARGV[2] the point (JSON)   ARGV[3] cap   ARGV[4] charge block (bytes)
-- Returns -1 when the session does not exist, else the bytes to charge now (often 0).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local v = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
local size = #ARGV[2]
local held = 0
if redis.call('ZADD', KEYS[2], v, ARGV[2]) == 1 then
  held = held + size
end
local n = redis.call('ZCARD', KEYS[2])
if n > cap then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - cap - 1)) do
    held = held - #m
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
end
local stride = tonumber(redis.call('GET', KEYS[4]) or '1')
if v % stride == 0 then
  if redis.call('ZADD', KEYS[3], v, ARGV[2]) == 1 then
    held = held + size
  end
  if redis.call('ZCARD', KEYS[3]) > cap then
    stride = stride * 2
    redis.call('SET', KEYS[4], stride)
    local all = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
    for i = 1, #all, 2 do
      if tonumber(all[i + 1]) % stride ~= 0 then
        redis.call('ZREM', KEYS[3], all[i])
        held = held - #all[i]
      end
    end
  end
end
local acct = redis.call('HMGET', KEYS[5], 'bytes', 'charged')
local bytes = tonumber(acct[1] or '0') + held
local charged = tonumber(acct[2] or '0')
local due = 0
if bytes > charged then
  local block = tonumber(ARGV[4])
  due = math.ceil((bytes - charged) / block) * block
  charged = charged + due
end
redis.call('HSET', KEYS[5], 'bytes', bytes, 'charged', charged)
local ttl = redis.call('PTTL', KEYS[1])
for i = 2, 5 do
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
  else
    redis.call('PERSIST', KEYS[i])
  end
end
return due
