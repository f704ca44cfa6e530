-- Acknowledges stream entries whose reservations are now in the store, once each.
--
-- KEYS: 1 reservation stream, 2 not-yet-imported reservations, 3.. the sale book of each entry
-- ARGV: 1 consumer group, then triples of entry id, reservation id, units (one per KEYS[3..])
-- Returns how many entries this call acknowledged.
local acked = 0
for i = 3, #KEYS do
  local at = 2 + (i - 3) * 3
  local entry, reservation, units = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  if redis.call('XACK', KEYS[1], ARGV[1], entry) == 1 then
    if redis.call('HEXISTS', KEYS[i], 'queued') == 1 then
      redis.call('HINCRBY', KEYS[i], 'queued', -units)
    end
    redis.call('HDEL', KEYS[2], reservation)
    acked = acked + 1
  end
  redis.call('XDEL', KEYS[1], entry)
end
return acked
