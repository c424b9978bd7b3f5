-- keel rate limiter: one operation on one bucket set (requests, input tokens, output tokens), atomically,
-- on the Redis server's clock. The same arithmetic as keel/ratelimit/buckets.py (`apply`); see its docstring.
--
-- KEYS[1]     the bucket set: a hash of six numbers, whatever the limits:
--             r, i, o (levels), t (time of the levels), f (rate factor), p (acquisitions paused until)
-- ARGV[1]     take | adjust | observe | peek
-- ARGV[2..4]  capacities          ARGV[5..7]  refill rates per second, before the factor
-- ARGV[8..10] take: debits; adjust: signed credits; observe: the server's remaining (negative: unknown)
-- ARGV[11..13] observe: factor scale, factor step, factor floor   ARGV[14] observe: pause (seconds)
--
-- Returns {granted (0 or 1), wait, r, i, o, f, paused_for}, numbers after the first as strings: a Lua number
-- returned to Redis is truncated to an integer.
--
-- An absent hash is a full bucket set at factor 1. The hash expires once it would be full again (plus the
-- pause left), so an idle set costs no memory and reads back the same.

local key = KEYS[1]
local op = ARGV[1]
local cap, rate, amount = {}, {}, {}
for k = 1, 3 do
  cap[k] = tonumber(ARGV[1 + k])
  rate[k] = tonumber(ARGV[4 + k])
  amount[k] = tonumber(ARGV[7 + k])
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local stored = redis.call('HMGET', key, 'r', 'i', 'o', 't', 'f', 'p')
local factor = tonumber(stored[5]) or 1
local paused_until = tonumber(stored[6]) or 0
local elapsed = math.max(0, now - (tonumber(stored[4]) or now))
local level = {}
for k = 1, 3 do
  local was = tonumber(stored[k])
  if was == nil then
    level[k] = cap[k]
  else
    level[k] = math.min(cap[k], was + elapsed * rate[k] * factor)
  end
end

local granted, wait, write = 0, 0, true
if op == 'take' then
  if paused_until > now then
    wait = paused_until - now
  else
    for k = 1, 3 do
      if amount[k] > level[k] then
        wait = math.max(wait, (amount[k] - level[k]) / (rate[k] * factor))
      end
    end
    if wait == 0 then
      granted = 1
      for k = 1, 3 do
        level[k] = level[k] - amount[k]
      end
    end
  end
  write = granted == 1
elseif op == 'adjust' then
  for k = 1, 3 do
    level[k] = math.min(cap[k], level[k] + amount[k])
  end
elseif op == 'observe' then
  for k = 1, 3 do
    if amount[k] >= 0 then
      level[k] = math.min(level[k], amount[k])
    end
  end
  factor = math.min(1, math.max(tonumber(ARGV[13]), factor * tonumber(ARGV[11]) + tonumber(ARGV[12])))
  local pause = tonumber(ARGV[14])
  if pause > 0 then
    paused_until = math.max(paused_until, now + pause)
  end
elseif op == 'peek' then
  write = false
else
  return redis.error_reply('keel ratelimit: unknown operation ' .. tostring(op))
end

local function num(x)
  return string.format('%.17g', x)
end

local paused_for = math.max(0, paused_until - now)
if write then
  redis.call('HSET', key, 'r', num(level[1]), 'i', num(level[2]), 'o', num(level[3]), 't', num(now),
    'f', num(factor), 'p', num(paused_until))
  local full_in = 0
  for k = 1, 3 do
    full_in = math.max(full_in, (cap[k] - level[k]) / (rate[k] * factor))
  end
  redis.call('PEXPIRE', key, math.ceil((full_in + paused_for + 1) * 1000))
end
return {granted, num(wait), num(level[1]), num(level[2]), num(level[3]), num(factor), num(paused_for)}
