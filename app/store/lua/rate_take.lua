-- A token bucket shared by every API process, timed by the Redis server's clock.
--
-- KEYS[1]   optd:tenant:{<tenant>}:bucket   hash: tokens, at (ms)
-- ARGV[1]   rate (tokens per second);  ARGV[2] burst (bucket size)
-- Returns 0 (granted) or the milliseconds until a token is available.
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(cur[1]) or burst
local at = tonumber(cur[2]) or now
tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return wait
