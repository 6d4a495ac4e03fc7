-- Sums the buckets of [from, to): whole minutes from minute hashes, the edges from second hashes.
-- Returns nil when Redis cannot answer exactly (never fed, a gap, behind what a rebuild saw in
-- PostgreSQL, or unbucketed events in range); {'too_many', n} when the window's hashes hold more
-- than max_fields fields in all (counted with HLEN, O(1) a hash, before any is read): summing
-- them would hold Redis, which runs one script at a time, for longer than any reader waits
-- (an hour of 100k services: ~720k fields, 4.6 s of Redis); else {'ok', field, count, ...}.
-- ARGV: base, from, to, max_fields
local base = ARGV[1]
local from = tonumber(ARGV[2])
local to = tonumber(ARGV[3])
local max_fields = tonumber(ARGV[4])
if redis.call('EXISTS', base .. ':applied') == 0 then
  return false
end
if redis.call('EXISTS', base .. ':incomplete') == 1 then
  return false
end
-- Not caught up with what a rebuild saw in PostgreSQL yet (a delta still on its way, or lost).
local expect = redis.call('HGETALL', base .. ':expect')
for j = 1, #expect, 2 do
  local applied = tonumber(redis.call('HGET', base .. ':applied', expect[j]) or '-1')
  if applied < tonumber(expect[j + 1]) then
    return false
  end
end
if redis.call('ZCOUNT', base .. ':future', from, '(' .. to) > 0 then
  return false
end
local keys = {}
local first_minute = math.floor(from / 60)
if from % 60 ~= 0 then
  first_minute = first_minute + 1
end
local end_minute = math.floor(to / 60)
if first_minute < end_minute then
  for s = from, first_minute * 60 - 1 do keys[#keys + 1] = base .. ':s:' .. s end
  for m = first_minute, end_minute - 1 do keys[#keys + 1] = base .. ':m:' .. m end
  for s = end_minute * 60, to - 1 do keys[#keys + 1] = base .. ':s:' .. s end
else
  for s = from, to - 1 do keys[#keys + 1] = base .. ':s:' .. s end
end
local fields = 0
for _, key in ipairs(keys) do
  fields = fields + redis.call('HLEN', key)
end
if fields > max_fields then
  return {'too_many', tostring(fields)}
end
local acc = {}
for _, key in ipairs(keys) do
  local kv = redis.call('HGETALL', key)
  for j = 1, #kv, 2 do
    acc[kv[j]] = (acc[kv[j]] or 0) + tonumber(kv[j + 1])
  end
end
local out = {'ok'}
for k, v in pairs(acc) do
  out[#out + 1] = k
  out[#out + 1] = tostring(v)
end
return out
