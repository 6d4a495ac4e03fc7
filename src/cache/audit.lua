-- After a rebuild from PostgreSQL: Redis may answer only once it has folded in at least what the
-- store held then. Records those offsets (never lowering one), for as long as buckets live.
-- ARGV: base, ttl, (partition, offset)...
local base = ARGV[1]
local key = base .. ':expect'
for i = 3, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', key, ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > current then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', key, ARGV[2])
return 1
