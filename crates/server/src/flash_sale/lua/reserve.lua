-- The redis engine's reserve step: window, buyer's limit, stock, and the queue entry, in one
-- atomic call. Nothing can be lost between taking the stock and queueing the reservation.
--
-- KEYS: 1 sale book (hash), 2 units held per buyer (hash), 3 reservation stream,
--       4 reservations accepted but not yet imported (hash id -> fields),
--       5 this attempt's fence (set by fence.lua when the attempt's answer was lost),
--       6 (only with an idempotency key) the buyer's key
-- ARGV: 1 buyer, 2 units, 3 now (ms), 4 reservation id, 5 sale id,
--       6 (with a key) the key, 7 (with a key) how long Redis keeps the key (ms)
-- Returns OK, SOLDOUT, LIMIT, CLOSED, NOBOOK (the book is not loaded: load and retry),
-- FENCED (this attempt was given up on: it must not run), or DUP:<id>:<sale>:<units>:<at>
-- (the key already names that reservation; nothing was taken).
if redis.call('EXISTS', KEYS[5]) == 1 then
  return 'FENCED'
end
if KEYS[6] then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then
    return 'DUP:' .. earlier
  end
end
local book = redis.call('HMGET', KEYS[1], 'remaining', 'limit', 'starts', 'ends', 'open')
if not book[1] then
  return 'NOBOOK'
end
local now = tonumber(ARGV[3])
if book[5] ~= '1' or now < tonumber(book[3]) or now >= tonumber(book[4]) then
  return 'CLOSED'
end
local units = tonumber(ARGV[2])
-- The limit before the stock: a duplicate purchase never touches stock.
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + units > tonumber(book[2]) then
  return 'LIMIT'
end
if tonumber(book[1]) < units then
  return 'SOLDOUT'
end
redis.call('HINCRBY', KEYS[1], 'remaining', -units)
redis.call('HINCRBY', KEYS[1], 'queued', units)
redis.call('HINCRBY', KEYS[2], ARGV[1], units)
if KEYS[6] then
  redis.call('XADD', KEYS[3], '*', 'r', ARGV[4], 's', ARGV[5], 'u', ARGV[1], 'q', ARGV[2], 't', ARGV[3], 'k', ARGV[6])
  redis.call('SET', KEYS[6], ARGV[4] .. ':' .. ARGV[5] .. ':' .. ARGV[2] .. ':' .. ARGV[3], 'PX', ARGV[7])
else
  redis.call('XADD', KEYS[3], '*', 'r', ARGV[4], 's', ARGV[5], 'u', ARGV[1], 'q', ARGV[2], 't', ARGV[3])
end
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5] .. ':' .. ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[3])
return 'OK'
