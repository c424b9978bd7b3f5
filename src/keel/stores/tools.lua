-- keel's at-most-once tool store on Redis: one script, one operation per call, atomic on the server.
--
-- KEYS[1]: the call's record, a hash (tool, status, owner, attempt, result, claimed_at, expires_at, completed_at),
--          kept until it is forgotten;
-- KEYS[2]: its lease, a string holding the owner, set with SET NX and a TTL while the call runs.
-- A record "claimed" whose lease key has expired is a claimer that died: its outcome is unknown.
-- Times are the server's clock (TIME), in seconds, written with microseconds.
--
-- ARGV[1]: the operation (claim, renew, complete, release, get), then its arguments.
-- Every reply is {code, record as a flat field/value list, previous record (claim takeovers only)}.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]

local function fmt(x)
  return string.format('%.6f', x)
end

local function record()
  return redis.call('HGETALL', KEYS[1])
end

local function expires(lease_ms)
  return fmt(now + tonumber(lease_ms) / 1000)
end

if op == 'get' then
  return {1, record(), {}}
end

local status = redis.call('HGET', KEYS[1], 'status')
local owner = redis.call('HGET', KEYS[1], 'owner')

if op == 'claim' then
  local me, tool, lease_ms, takeover = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
  if not status then
    if redis.call('SET', KEYS[2], me, 'NX', 'PX', lease_ms) then
      redis.call('HSET', KEYS[1], 'tool', tool, 'status', 'claimed', 'owner', me, 'attempt', 1,
                 'claimed_at', fmt(now), 'expires_at', expires(lease_ms))
      return {1, record(), {}}
    end
    return {0, {}, {}}  -- a lease without a record: cannot happen unless someone wrote these keys by hand
  end
  if status == 'claimed' and owner == me then
    return {1, record(), {}}  -- our own claim: a retry whose first reply was lost
  end
  local expired = status == 'claimed' and redis.call('EXISTS', KEYS[2]) == 0
  if expired and takeover and redis.call('SET', KEYS[2], me, 'NX', 'PX', lease_ms) then
    local previous = record()
    redis.call('HSET', KEYS[1], 'owner', me, 'claimed_at', fmt(now), 'expires_at', expires(lease_ms))
    redis.call('HINCRBY', KEYS[1], 'attempt', 1)
    return {1, record(), previous}
  end
  return {expired and 2 or 0, record(), {}}
end

local me = ARGV[2]
if op == 'renew' then
  if status == 'claimed' and owner == me then
    -- the lease: a key that vanishes lease_ms after the last renewal unless its owner renews it
    redis.call('SET', KEYS[2], me, 'PX', ARGV[3])
    redis.call('HSET', KEYS[1], 'expires_at', expires(ARGV[3]))
    return {1, {}, {}}
  end
  return {0, {}, {}}
end

if op == 'complete' then
  local new_status, result = ARGV[3], ARGV[4]
  if status == 'claimed' and owner == me then
    redis.call('HSET', KEYS[1], 'status', new_status, 'result', result, 'completed_at', fmt(now))
    redis.call('DEL', KEYS[2])
    return {1, {}, {}}
  end
  -- already completed by this very owner with this result: a retry whose first reply was lost
  local done = status == new_status and owner == me and redis.call('HGET', KEYS[1], 'result') == result
  return {done and 1 or 0, {}, {}}
end

if op == 'release' then
  if owner == me then
    redis.call('DEL', KEYS[1], KEYS[2])
    return {1, {}, {}}
  end
  return {0, {}, {}}
end

return redis.error_reply('keel tools store: unknown operation ' .. tostring(op))
