-- Sums the buckets of [from, to): whole minutes from minute hashes, the edges from second hashes.
-- Returns nil when Redis cannot answer exactly (never fed, a gap, behind what a rebuild saw in
-- PostgreSQL, or unbucketed events in range).
-- ARGV: base, from, to
local base = ARGV[1]
local from = tonumber(ARGV[2])
local to = tonumber(ARGV[3])
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
local acc = {}
local function add(key)
  local kv = redis.call('HGETALL', key)
  for j = 1, #kv, 2 do
    acc[kv[j]] = (acc[kv[j]] or 0) + tonumber(kv[j + 1])
  end
end
local first_minute = math.floor(from / 60)
if from % 60 ~= 0 then
  first_minute = first_minute + 1
end
local end_minute = math.floor(to / 60)
if first_minute < end_minute then
  for s = from, first_minute * 60 - 1 do add(base .. ':s:' .. s) end
  for m = first_minute, end_minute - 1 do add(base .. ':m:' .. m) end
  for s = end_minute * 60, to - 1 do add(base .. ':s:' .. s) end
else
  for s = from, to - 1 do add(base .. ':s:' .. s) end
end
local out = {}
for k, v in pairs(acc) do
  out[#out + 1] = k
  out[#out + 1] = tostring(v)
end
return out
