-- Delete a session's meta, every chunk its layout names, its step log, its open and last
-- sync rounds, its members and its history (UNLINK: freed in the background).
-- Idempotency records are not enumerable without SCAN; they expire on their own TTL.
--
-- KEYS[1]         optd:{sid}:meta
-- Returns 1 when the session existed, else 0.
local slots = redis.call('HGET', KEYS[1], 'slots')
if not slots then
  return 0
end
local prefix = string.sub(KEYS[1], 1, -5)
for name, e in pairs(cjson.decode(slots)) do
  for c = 0, e[3] - 1 do
    redis.call('UNLINK', prefix .. 'slot:' .. name .. ':' .. e[4] .. ':' .. c)
  end
end
local log = redis.call('HGET', KEYS[1], 'log')
if log then
  for _, e in ipairs(cjson.decode(log)) do
    redis.call('UNLINK', prefix .. 'logrec:' .. e[1])
    for c = 0, e[2] - 1 do
      redis.call('UNLINK', prefix .. 'log:' .. e[1] .. ':' .. c)
    end
  end
end
local version = tonumber(redis.call('HGET', KEYS[1], 'version'))
redis.call('UNLINK', prefix .. 'barrier:' .. version, prefix .. 'barrier:' .. (version - 1),
  prefix .. 'rounds', prefix .. 'members', prefix .. 'hist', prefix .. 'hist:tail',
  prefix .. 'hist:stride', prefix .. 'hist:acct', prefix .. 'owner')
redis.call('UNLINK', KEYS[1])
return 1
