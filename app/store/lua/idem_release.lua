-- Drop an in-flight marker: KEYS[1] is deleted only while it holds exactly ARGV[1] (our
-- own claim), never once the commit has put the record there or another request (after
-- our lease lapsed) has claimed the key.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
