-- Delete KEYS[1] only if it still holds ARGV[1] (our lock token or in-flight marker).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
