-- Settles a reserve attempt whose answer was lost (Redis stalled past the caller's timeout, or
-- the connection broke): after this call the attempt can no longer reserve anything.
--
-- KEYS: 1 the attempt's fence, 2 reservations accepted but not yet imported (hash)
-- ARGV: 1 the attempt's reservation id, 2 how long the fence lasts (ms)
-- Returns RESERVED if the attempt ran and reserved (its reservation is queued here), else
-- FENCED: the attempt either never ran (it will now refuse itself if it ever does), was
-- refused, or ran and was imported already (the caller then finds it in the store).
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 'RESERVED'
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 'FENCED'
