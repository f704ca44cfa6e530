-- Installs a sale's book rebuilt from durable records, unless one is already there.
--
-- KEYS: 1 sale book, 2 held per buyer, 3 returned reservation ids, 4 staged held, 5 staged returned
-- ARGV: 1 remaining, 2 per-buyer limit, 3 starts (ms), 4 ends (ms), 5 open (1 or 0)
-- Returns 1 if installed, 0 if a book was already loaded (the staged keys are dropped).
if redis.call('HEXISTS', KEYS[1], 'remaining') == 1 then
  redis.call('DEL', KEYS[4], KEYS[5])
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[3])
  redis.call('PERSIST', KEYS[3])
end
redis.call('HSET', KEYS[1], 'remaining', ARGV[1], 'limit', ARGV[2], 'starts', ARGV[3], 'ends', ARGV[4],
  'open', ARGV[5], 'queued', 0)
return 1
