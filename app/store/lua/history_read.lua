-- Read a page of a session's history: the tail's points older than the recent window,
-- then the recent ones, all with a version above ARGV[1], oldest first, at most ARGV[2].
--
-- KEYS[1] optd:{sid}:hist   KEYS[2] optd:{sid}:hist:tail   KEYS[3] optd:{sid}:hist:stride
-- ARGV[1] since (exclusive)   ARGV[2] limit
-- Returns {stride, oldest recent version or -1, {points...}}.
local limit = tonumber(ARGV[2])
local lo = '(' .. ARGV[1]
local stride = tonumber(redis.call('GET', KEYS[3]) or '1')
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  return {stride, -1, {}}
end
local start = tonumber(first[2])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], lo, '(' .. start, 'LIMIT', 0, limit)
if #out < limit then
  local rest = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'LIMIT', 0, limit - #out)
  for i = 1, #rest do
    out[#out + 1] = rest[i]
  end
end
return {stride, start, out}
