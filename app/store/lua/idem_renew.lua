-- Renew the lease of an in-flight marker while its request runs: KEYS[1] gets ARGV[2]
-- more milliseconds only while it holds exactly ARGV[1] (our own claim).
-- Returns 1 (renewed) | 0 (the claim is gone: committed, released, or lapsed and taken).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
