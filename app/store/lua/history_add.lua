-- Add one point to a session's history (app/store/history.py says what the two sets are;
-- this is the same algorithm). Nothing is written for a session that is gone (a step
-- racing a DELETE leaves no orphan keys); the history keys live exactly as long as meta.
--
-- KEYS[1] optd:{sid}:meta   KEYS[2] optd:{sid}:hist   KEYS[3] optd:{sid}:hist:tail
-- KEYS[4] optd:{sid}:hist:stride
-- ARGV[1] version   ARGV[2] the point (JSON)   ARGV[3] cap
-- Returns 1 when added, 0 when the session does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local v = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], v, ARGV[2])
local n = redis.call('ZCARD', KEYS[2])
if n > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - cap - 1)
end
local stride = tonumber(redis.call('GET', KEYS[4]) or '1')
if v % stride == 0 then
  redis.call('ZADD', KEYS[3], v, ARGV[2])
  if redis.call('ZCARD', KEYS[3]) > cap then
    stride = stride * 2
    redis.call('SET', KEYS[4], stride)
    local all = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
    for i = 1, #all, 2 do
      if tonumber(all[i + 1]) % stride ~= 0 then
        redis.call('ZREM', KEYS[3], all[i])
      end
    end
  end
end
local ttl = redis.call('PTTL', KEYS[1])
for i = 2, 4 do
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
  else
    redis.call('PERSIST', KEYS[i])
  end
end
return 1
