-- After a rebuild from PostgreSQL: a partition holding stored events that Redis never saw makes
-- Redis incomplete (until its buckets expire). ARGV: base, incomplete_ttl, (partition, offset)...
local base = ARGV[1]
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > 0 and redis.call('HEXISTS', base .. ':applied', ARGV[i]) == 0 then
    redis.call('SET', base .. ':incomplete', 'unseen-partition', 'EX', ARGV[2])
    return 0
  end
end
return 1
