-- Drop an in-flight marker of ours: KEYS[1] is deleted only while its value starts with
-- ARGV[1] ('inflight:<fingerprint>:'), never once the commit has put the record there.
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
