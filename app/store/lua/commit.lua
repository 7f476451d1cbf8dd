-- Compare-and-set commit of one step: all or nothing, one round trip.
--
-- Runs inside MULTI/EXEC right after the SETs of the new chunks (`SET key value EX
-- pending`, under keys named by a random token of this write), so big values never pass
-- through Lua. On success the layout in meta points at the new chunks and the chunks they
-- replace are unlinked; on conflict the new chunks are unlinked. A reader that holds the
-- old layout finds its chunks either all present or some gone, never rewritten.
--
-- KEYS[1]         optd:{sid}:meta
-- KEYS[2..1+C]    the chunk keys just SET: optd:{sid}:slot:<slot>:<token>:<i>
-- KEYS[2+C]       optd:{sid}:idem:<hash>, present only when ARGV[3] is not empty
-- ARGV[1]         expected version
-- ARGV[2]         session TTL in seconds (0: keep the session's current TTL, if any)
-- ARGV[3]         '' or the claim's marker, '\n', the encoded record (_cas.lua)
-- ARGV[4]         idempotency record TTL in seconds
-- ARGV[5]         new engine meta (opaque bytes)
-- ARGV[6]         token of this write
-- ARGV[7]         written slots, JSON {slot: [dtype, length, nchunks, token, nbytes]}
-- ARGV[8]         token of the advisory lock to release on success ('' : none; '?' : an
--                 optimistic step that did not take the lock: a conflict while anyone
--                 holds it, so steps that skipped the lock yield to steps that queue)
-- ARGV[9]         the labels `list` filters on, JSON object ('' : unchanged); the list
--                 reads them from meta, so they change atomically with the session
-- ARGV[10]        K: the values of the first K chunk keys follow as ARGV[11..10+K] and
--                 are SET here (a small state: one EVALSHA instead of MULTI, SETs, EVAL,
--                 EXEC); 0 when they were SET before the script
-- Returns {1, new_version, incarnation} | {0, current_version} (conflict) | {-1} (no session)
-- | {-2} (a step log is pending and ARGV[7] does not rewrite every slot: refused)
-- | {-3} (the Idempotency-Key is no longer this request's claim: refused, CAS.claim_held).
-- A commit is a snapshot: it unlinks the session's step log (see append.lua).
-- A retry of a commit that succeeded (its reply lost) is recognised by its token and
-- answers {1, ...} again without applying anything twice.
-- (the shared core, CAS, is lua/_cas.lua, prepended by the store)
local ttl = tonumber(ARGV[2])
local token = ARGV[6]
local nchunks = CAS.written()
local cur, settle = CAS.begin(10)
if not cur[1] then
  CAS.unlink_written()
  return {-1}
end
local version = tonumber(cur[1])
local layout = cjson.decode(cur[2])
if version ~= tonumber(ARGV[1]) or CAS.yields(ARGV[8]) then
  for i = 2, 1 + nchunks do
    local name = string.match(KEYS[i], ':slot:(.+):[^:]+:%d+$')
    if layout[name] and layout[name][4] == token then
      settle(KEYS[i])  -- live chunk of this very commit, rewritten by its retry
    else
      redis.call('UNLINK', KEYS[i])
    end
  end
  if cur[4] == token and version == tonumber(ARGV[1]) + 1 then
    return {1, version, cur[3]}
  end
  return {0, version}
end
if not CAS.claim_held(cur[3]) then
  CAS.unlink_written()
  return {-3}
end
local prefix = CAS.prefix
local written = cjson.decode(ARGV[7])
local log = cur[5] and cjson.decode(cur[5]) or {}
if #log > 0 then
  for name, _ in pairs(layout) do
    if not written[name] then
      CAS.unlink_written()
      return {-2}
    end
  end
  for _, e in ipairs(log) do
    redis.call('UNLINK', prefix .. 'logrec:' .. e[1])
    for c = 0, e[2] - 1 do
      redis.call('UNLINK', prefix .. 'log:' .. e[1] .. ':' .. c)
    end
  end
  redis.call('HDEL', KEYS[1], 'log')
end
for name, e in pairs(written) do
  local old = layout[name]
  if old then
    for c = 0, old[3] - 1 do
      redis.call('UNLINK', prefix .. 'slot:' .. name .. ':' .. old[4] .. ':' .. c)
    end
  end
  layout[name] = e
end
for i = 2, 1 + nchunks do
  settle(KEYS[i])
end
if ttl > 0 then
  for name, e in pairs(layout) do
    if e[4] ~= token then
      for c = 0, e[3] - 1 do
        redis.call('EXPIRE', prefix .. 'slot:' .. name .. ':' .. e[4] .. ':' .. c, ttl)
      end
    end
  end
  redis.call('EXPIRE', KEYS[1], ttl)
end
redis.call('HSET', KEYS[1], 'version', version + 1, 'tok', token, 'meta', ARGV[5],
  'slots', cjson.encode(layout))
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'labels', ARGV[9])
end
return CAS.finish(version + 1, ARGV[8], cur[3])
