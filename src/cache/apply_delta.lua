-- Applies one committed batch's bucket delta, at most once per partition offset range.
-- ARGV: base, partition, from, to, incomplete_ttl, newest_ms, keep_secs, n_future, future seconds...,
--       then per second: second, n_fields, (field, increment) x n_fields
local base = ARGV[1]
local partition = ARGV[2]
local from = tonumber(ARGV[3])
local to = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local applied = redis.call('HGET', base .. ':applied', partition)
if applied then
  applied = tonumber(applied)
  if to <= applied then
    return 0 -- already applied
  end
  if from ~= applied then
    -- Some batches of this partition never reached Redis: its buckets are short until they expire.
    redis.call('SET', base .. ':incomplete', 'gap', 'EX', ttl)
  end
elseif from ~= 0 then
  redis.call('SET', base .. ':incomplete', 'late-start', 'EX', ttl)
end
local newest = tonumber(ARGV[6])
if newest >= 0 then
  local watermark = tonumber(redis.call('GET', base .. ':watermark') or '-1')
  if newest > watermark then
    redis.call('SET', base .. ':watermark', newest)
  end
end
local keep = tonumber(ARGV[7])
local i = 8
local n_future = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_future do
  redis.call('ZADD', base .. ':future', ARGV[i], ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  local second = tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  local minute = math.floor(second / 60)
  local skey = base .. ':s:' .. second
  local mkey = base .. ':m:' .. minute
  for _ = 1, n do
    redis.call('HINCRBY', skey, ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', mkey, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('EXPIREAT', skey, second + keep)
  redis.call('EXPIREAT', mkey, minute * 60 + 60 + keep)
end
redis.call('HSET', base .. ':applied', partition, to)
return 1
