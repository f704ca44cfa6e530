-- Gives released reservations' units back to an open sale's book, each at most once.
--
-- KEYS: 1 sale book, 2 held per buyer, 3 returned reservation ids
-- ARGV: triples of reservation id, buyer, units
-- Returns the units given back by this call.
if redis.call('HGET', KEYS[1], 'open') ~= '1' then
  -- Closed or not loaded: the store's records already account for these units.
  return 0
end
local given = 0
for i = 1, #ARGV, 3 do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    local units = tonumber(ARGV[i + 2])
    redis.call('HINCRBY', KEYS[1], 'remaining', units)
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], -units) <= 0 then
      redis.call('HDEL', KEYS[2], ARGV[i + 1])
    end
    given = given + units
  end
end
return given
