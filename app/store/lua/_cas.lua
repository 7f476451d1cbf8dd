-- The compare-and-set core that commit.lua and append.lua share (and `CAS.settler`, which
-- create.lua uses too); the store prepends this file to all three (Redis scripts are
-- standalone). Conventions common to both scripts:
-- KEYS[1] the meta key; KEYS[2..1+n] the keys this write SET (or SETs inline); the last
-- key the idempotency record's when ARGV[3] is not empty. ARGV[1] expected version,
-- ARGV[2] session TTL (0: keep), ARGV[3] idempotency ('' : none; else the claim's
-- in-flight marker, '\n', the encoded record), ARGV[4] its TTL, ARGV[5] new meta,
-- ARGV[6] this write's token.
local CAS = {}
CAS.prefix = string.sub(KEYS[1], 1, -5)
CAS.owner, CAS.record = string.match(ARGV[3], '^([^\n]*)\n(.*)$')

-- May this write carry its idempotency record? Only while the key holds our own claim,
-- or nothing (our lease lapsed and nobody claimed it since), or a record of an earlier
-- incarnation of the session. Another claim (ours lapsed and a retry took over) or this
-- incarnation's record (a retry committed it) means the step is someone else's to apply:
-- committing would apply it twice.
function CAS.claim_held(inc)
  if ARGV[3] == '' then
    return true
  end
  local v = redis.call('GET', KEYS[#KEYS])
  if not v or v == CAS.owner then
    return true
  end
  local at = string.match(v, '^@([^\n]*)\n')
  return at ~= nil and at ~= (inc or '')
end

-- How many keys this write SET (the chunk or log keys, not meta or the record).
function CAS.written()
  local n = #KEYS - 1
  if ARGV[3] ~= '' then
    n = n - 1
  end
  return n
end

-- SET the first K written keys from ARGV (a small write: one EVALSHA, no MULTI); K is
-- ARGV[k_at] and the values follow it. Then read the session's head: returns its
-- {version, slots, inc, tok, log} and `settle(key)`, which gives a written key the
-- session's lifetime (the chunks were SET with a short pending TTL).
function CAS.begin(k_at)
  for i = 2, 1 + tonumber(ARGV[k_at]) do
    redis.call('SET', KEYS[i], ARGV[k_at - 1 + i])
  end
  local cur = redis.call('HMGET', KEYS[1], 'version', 'slots', 'inc', 'tok', 'log')
  return cur, CAS.settler(tonumber(ARGV[2]))
end

-- `settle(key)`: a key this write SET (with a short pending TTL) gets the session's
-- lifetime: `ttl` seconds when given (> 0), else the meta key's current TTL, else none.
-- create.lua uses it too.
function CAS.settler(ttl)
  local pttl = redis.call('PTTL', KEYS[1])
  return function(key)
    if ttl > 0 then
      redis.call('EXPIRE', key, ttl)
    elseif pttl > 0 then
      redis.call('PEXPIRE', key, pttl)
    else
      redis.call('PERSIST', key)
    end
  end
end

function CAS.unlink_written()
  for i = 2, 1 + CAS.written() do
    redis.call('UNLINK', KEYS[i])
  end
end

-- An optimistic writer ('?': it skipped the advisory lock) yields to anyone holding it.
function CAS.yields(unlock)
  return unlock == '?' and redis.call('EXISTS', CAS.prefix .. 'lock') == 1
end

-- After the new head is written: store the idempotency record with it, release the
-- advisory lock held under `unlock`, and answer {1, new version, incarnation}.
function CAS.finish(new_version, unlock, inc)
  if ARGV[3] ~= '' then
    local value = '@' .. (inc or '') .. '\n' .. CAS.record
    redis.call('SET', KEYS[#KEYS], value, 'EX', tonumber(ARGV[4]))
  end
  if unlock ~= '' and redis.call('GET', CAS.prefix .. 'lock') == unlock then
    redis.call('DEL', CAS.prefix .. 'lock')
  end
  return {1, new_version, inc}
end

