-- Takes or extends a lease: held by ARGV[1] for ARGV[2] ms from now.
--
-- KEYS: 1 the lease
-- ARGV: 1 this holder, 2 the lease's time to live in milliseconds
-- Returns 1 when ARGV[1] holds the lease now, 0 when another holder does.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
