-- Gives a lease up, if ARGV[1] still holds it (another holder's lease is left alone).
--
-- KEYS: 1 the lease
-- ARGV: 1 this holder
-- Returns 1 when the lease was released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
