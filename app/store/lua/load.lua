-- Read a session's meta, and its slots' chunks when they are small, in one round trip;
-- skip the slots the caller already holds at this version.
--
-- Big slots are not returned here (Lua copies every value it touches, ~2 ms per MB):
-- the caller GETs their chunks in one pipeline. Chunk keys are never rewritten, only
-- unlinked when a commit replaces them, so that second read either gets exactly the
-- layout's data or a nil, and then reads again.
--
-- KEYS[1]         optd:{sid}:meta
-- ARGV[1]         version of the caller's cached copy (-1: none)
-- ARGV[2]         incarnation of the caller's cached copy
-- ARGV[3]         inline limit: return the chunks when the wanted slots are this small
-- ARGV[4]         advisory lock token to take ('' : none), see lock below
-- ARGV[5]         its TTL in milliseconds
-- ARGV[6]         N, the number of requested slot names (-1: every slot)
-- ARGV[7..6+N]    requested slot names (names the session lacks are ignored)
-- ARGV[7+N..]     names the caller holds at its version; skipped when version and
--                 incarnation match
-- Returns {} when the session does not exist, {0} when another holder has the lock
-- (optd:{sid}:lock, SET NX PX: a step's load and lock in one round trip), else
-- {meta, want, inline, chunk...}: meta
-- is the HGETALL of the meta hash, want the slots the caller needs, inline 1 when their
-- chunks follow (slot by slot, nchunks each as in meta's layout), 0 when it must GET them.
-- With a step log in meta (`log`), `want` is empty when the caller can replay the log
-- onto its own copy, else every slot of the snapshot.
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then
  return {}
end
local prefix = string.sub(KEYS[1], 1, -5)
if ARGV[4] ~= '' then
  local lock = prefix .. 'lock'
  if redis.call('GET', lock) ~= ARGV[4] then
    if not redis.call('SET', lock, ARGV[4], 'NX', 'PX', tonumber(ARGV[5])) then
      return {0}
    end
  end
end
local h = {}
for i = 1, #meta, 2 do
  h[meta[i]] = meta[i + 1]
end
local layout = cjson.decode(h['slots'])
local n = tonumber(ARGV[6])
local want = {}
if n < 0 then
  for name, _ in pairs(layout) do
    want[#want + 1] = name
  end
else
  for i = 7, 6 + n do
    if layout[ARGV[i]] then
      want[#want + 1] = ARGV[i]
    end
  end
end
local have = {}
for i = 7 + math.max(n, 0), #ARGV do
  have[ARGV[i]] = true
end
local same = h['inc'] == ARGV[2]
local cached = tonumber(ARGV[1])
local version = tonumber(h['version'])
local nlog = h['log'] and #cjson.decode(h['log']) or 0
if same and cached == version then
  local rest = {}
  for _, name in ipairs(want) do
    if not have[name] then
      rest[#rest + 1] = name
    end
  end
  want = rest
  if nlog > 0 and #rest > 0 then
    want = {}  -- a slot the caller lacks is only current after replaying the log: all
    for name, _ in pairs(layout) do
      want[#want + 1] = name
    end
  end
elseif nlog > 0 and #want > 0 then
  -- The state is the snapshot plus the logged steps: the caller replays the log onto its
  -- own copy when it holds every slot at a version the log covers, else onto the
  -- snapshot, which it then needs whole.
  local all = true
  for name, _ in pairs(layout) do
    all = all and have[name] == true
  end
  want = {}
  if not (same and all and cached >= version - nlog and cached < version) then
    for name, _ in pairs(layout) do
      want[#want + 1] = name
    end
  end
end
local bytes = 0
for _, name in ipairs(want) do
  bytes = bytes + layout[name][5]
end
if bytes > tonumber(ARGV[3]) then
  return {meta, want, 0}
end
local out = {meta, want, 1}
for _, name in ipairs(want) do
  local e = layout[name]
  for c = 0, e[3] - 1 do
    out[#out + 1] = redis.call('GET', prefix .. 'slot:' .. name .. ':' .. e[4] .. ':' .. c)
  end
end
return out
