-- Compare-and-set commit of one step kept as a log entry (its gradient) instead of new
-- slots: the snapshot in `slots` stays, the entry is appended to `log` (keys.py).
--
-- Runs inside MULTI/EXEC right after the SETs of the entry's keys (`SET key value EX
-- pending`), like commit.lua. The caller decides between the two (it knows the log's
-- length at the version it loaded); a log only grows on top of the incarnation it was
-- computed from.
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2..1+C]    the entry's keys: optd:{sid}:logrec:<token>, optd:{sid}:log:<token>:<i>
-- KEYS[2+C]       optd:{sid}:idem:<hash>, present only when ARGV[3] is not empty
-- ARGV[1]         expected version
-- ARGV[2]         session TTL in seconds (0: keep the session's current TTL, if any)
-- ARGV[3]         '' or the claim's marker, '\n', the encoded record (_cas.lua)
-- ARGV[4]         idempotency record TTL in seconds
-- ARGV[5]         new engine meta (opaque bytes)
-- ARGV[6]         token of this write
-- ARGV[7]         the entry, JSON [token, nchunks, dtype, length, nbytes]
-- ARGV[8]         incarnation the caller loaded
-- ARGV[9]         token of the advisory lock to release on success ('' : none; '?' : an
--                 optimistic step: a conflict while anyone holds the lock, see commit.lua)
-- ARGV[10]        K: the values of the first K keys follow as ARGV[11..10+K] and are SET
--                 here; the other keys were SET before (MULTI, or staged while the step
--                 was computed)
-- Returns {1, new_version, incarnation} | {0, current_version} (conflict) | {-1} (no session)
-- | {-3} (the Idempotency-Key is no longer this request's claim, see commit.lua).
-- A retry of an append that succeeded (its reply lost) is recognised by its token.
-- (the shared core, CAS, is lua/_cas.lua, prepended by the store)
local ttl = tonumber(ARGV[2])
local token = ARGV[6]
local nkeys = CAS.written()
local cur, settle = CAS.begin(10)
if not cur[1] then
  CAS.unlink_written()
  return {-1}
end
local version = tonumber(cur[1])
if version ~= tonumber(ARGV[1]) or cur[3] ~= ARGV[8] or CAS.yields(ARGV[9]) then
  local mine = cur[4] == token and version == tonumber(ARGV[1]) + 1
  for i = 2, 1 + nkeys do
    if mine then
      settle(KEYS[i])  -- this very append's live entry, rewritten by its retry
    else
      redis.call('UNLINK', KEYS[i])
    end
  end
  if mine then
    return {1, version, cur[3]}
  end
  return {0, version}
end
if not CAS.claim_held(cur[3]) then
  CAS.unlink_written()
  return {-3}
end
local log = cur[5] and cjson.decode(cur[5]) or {}
log[#log + 1] = cjson.decode(ARGV[7])
for i = 2, 1 + nkeys do
  settle(KEYS[i])
end
local prefix = CAS.prefix
if ttl > 0 then
  for name, e in pairs(cjson.decode(cur[2])) do
    for c = 0, e[3] - 1 do
      redis.call('EXPIRE', prefix .. 'slot:' .. name .. ':' .. e[4] .. ':' .. c, ttl)
    end
  end
  for i = 1, #log - 1 do
    local e = log[i]
    redis.call('EXPIRE', prefix .. 'logrec:' .. e[1], ttl)
    for c = 0, e[2] - 1 do
      redis.call('EXPIRE', prefix .. 'log:' .. e[1] .. ':' .. c, ttl)
    end
  end
  redis.call('EXPIRE', KEYS[1], ttl)
end
redis.call('HSET', KEYS[1], 'version', version + 1, 'tok', token, 'meta', ARGV[5],
  'log', cjson.encode(log))
return CAS.finish(version + 1, ARGV[9], cur[3])
