-- Delete a session's meta and every chunk its layout names (UNLINK: freed in the background).
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
redis.call('UNLINK', KEYS[1])
return 1
