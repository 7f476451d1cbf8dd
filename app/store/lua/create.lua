-- Create a session at version 0, only if it does not exist yet.
--
-- Runs inside MULTI/EXEC right after the SETs of its chunks (each `SET key value EX
-- pending`), so the whole create is one atomic round trip; big values never pass through
-- Lua (Lua copies its arguments, which costs ~2 ms per MB). The session index ZADD is a
-- second command: the index shard has another hash tag.
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2..]       the chunk keys just SET: optd:{sid}:slot:<slot>:<token>:<i>
-- ARGV[1]         session TTL in seconds (0: none)
-- ARGV[2]         engine meta (opaque bytes)
-- ARGV[3]         labels, JSON object
-- ARGV[4]         slots layout, JSON {slot: [dtype, length, nchunks, token, nbytes]}
-- ARGV[5]         created_at (unix seconds)
-- ARGV[6]         incarnation: random, tells a re-created session from its predecessor
-- ARGV[7]         token of this write (names its chunk keys; random per call)
-- Returns 1 when created (also when this is a retry of a create that succeeded), else 0.
local ttl = tonumber(ARGV[1])
local token = ARGV[7]
local cur = redis.call('HMGET', KEYS[1], 'slots', 'tok', 'version')
local settle = CAS.settler(ttl)  -- lua/_cas.lua, prepended by the store
if cur[1] then
  -- Keep our chunks only where the live layout uses them (a retried create rewrote them).
  local live = cjson.decode(cur[1])
  for i = 2, #KEYS do
    local name = string.match(KEYS[i], ':slot:(.+):[^:]+:%d+$')
    if live[name] and live[name][4] == token then
      settle(KEYS[i])
    else
      redis.call('UNLINK', KEYS[i])
    end
  end
  if cur[2] == token and cur[3] == '0' then
    return 1
  end
  return 0
end
for i = 2, #KEYS do
  settle(KEYS[i])
end
redis.call('HSET', KEYS[1], 'version', 0, 'inc', ARGV[6], 'tok', token, 'meta', ARGV[2],
  'labels', ARGV[3], 'slots', ARGV[4], 'created_at', ARGV[5])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 1
