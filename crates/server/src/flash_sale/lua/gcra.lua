-- Cluster-wide rate limits (GCRA) shared by every instance: one attempt is admitted only if
-- every key admits it, and then counts against all of them.
--
-- KEYS: the limits' state (the theoretical arrival time, in microseconds)
-- ARGV: per key, the emission interval and the burst tolerance (both microseconds)
-- Returns 0 if admitted, else the microseconds to wait before retrying.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local wait = 0
for i = 1, #KEYS do
  local interval, tolerance = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local allow_at = tat - tolerance
  if now < allow_at then
    wait = math.max(wait, allow_at - now)
  end
  tats[i] = tat + interval
end
if wait > 0 then
  return wait
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1)
end
return 0
