-- Add a worker's gradient to a sync round and record the worker as heard from, in one
-- round trip (issue #18: a contribution used to take two).
--
-- KEYS[1]   optd:{sid}:barrier:<version>   hash: worker -> gradient (safetensors)
-- KEYS[2]   optd:{sid}:rounds              hash: version -> first contribution (epoch s)
-- KEYS[3]   optd:{sid}:members             hash: s:<w> last seen, r:<w> rounds, v:<w> last version
-- KEYS[4]   optd:{sid}:meta                the session: the round is open only while the
--                                          session is at ARGV[4] (checked here, atomically,
--                                          so a gradient never joins a round that closed)
-- ARGV[1]   worker;  ARGV[2] gradient;  ARGV[3] TTL seconds;  ARGV[4] version
-- ARGV[5]   now (epoch seconds, the API process's clock, as the other member fields)
-- Returns {distinct workers in the round, 1 if this worker was new else 0}. A worker that
-- sends again (a retry) is not counted twice, neither in the round nor in its `rounds`.
-- Returns {-1, the session's version} when it is past ARGV[4], {-2, 0} when it is gone;
-- nothing is written then.
local at = redis.call('HGET', KEYS[4], 'version')
if not at then
  return {-2, 0}
end
if tonumber(at) ~= tonumber(ARGV[4]) then
  return {-1, tonumber(at)}
end
local w, ttl = ARGV[1], tonumber(ARGV[3])
local added = redis.call('HSETNX', KEYS[1], w, ARGV[2])
local count = redis.call('HLEN', KEYS[1])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('HSET', KEYS[3], 's:' .. w, ARGV[5])
if added == 1 then
  redis.call('HINCRBY', KEYS[3], 'r:' .. w, 1)
  redis.call('HSET', KEYS[3], 'v:' .. w, ARGV[4])
end
redis.call('EXPIRE', KEYS[3], ttl)
return {count, added}
