-- GCRA for one user, with the arithmetic of src/rate_limit/gcra.rs (governor's), in
-- microseconds on the clock of Redis TIME, shared by every instance that asks.
--
-- KEYS[1]  the user's hash: field `m` holds the message quota's theoretical arrival time
--          (TAT), field `b` the byte quota's; absent fields are 0 (a full bucket)
-- ARGV[1]  t, the message quota's emission interval (period / messages), in µs
-- ARGV[2]  tau, its burst tolerance, t * (burst - 1), in µs
-- ARGV[3]  the byte quota's t (0: no byte quota)
-- ARGV[4]  the byte quota's tau
-- ARGV[5]  n, the message's size in bytes (the byte quota's cost)
-- ARGV[6]  optional: "now" in µs instead of TIME (the crate's tests of the arithmetic)
--
-- A request of cost n is allowed at `now` if now >= tat + t*(n-1) - tau, and then
-- tat = max(tat, now) + t*n; otherwise it may retry after (tat + t*(n-1) - tau) - now.
-- The byte quota is tested first and nothing is written unless both pass. The key
-- expires when both buckets are full again (tat <= now), where the state equals none.
--
-- Returns {1} when allowed, {0, retry_after_us, quota} when refused (quota 1: messages,
-- 2: bytes), {-1, 0, 2} when n is more than the byte quota's whole burst.
-- Every number stays an integer below 2^53, where Lua's doubles are exact.

local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local bt = tonumber(ARGV[3])
local btau = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local now
if ARGV[6] then
  now = tonumber(ARGV[6])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local state = redis.call('HMGET', KEYS[1], 'm', 'b')
local tat = tonumber(state[1]) or 0
local btat = tonumber(state[2]) or 0

local new_btat = 0
if bt > 0 then
  local additional = bt * (n - 1)
  if additional > btau then
    return {-1, 0, 2}
  end
  local earliest = btat + additional - btau
  if now < earliest then
    return {0, earliest - now, 2}
  end
  new_btat = math.max(btat, now) + bt + additional
end

local earliest = tat - tau
if now < earliest then
  return {0, earliest - now, 1}
end
local new_tat = math.max(tat, now) + t

if bt > 0 then
  redis.call('HSET', KEYS[1], 'm', string.format('%.0f', new_tat),
    'b', string.format('%.0f', new_btat))
else
  redis.call('HSET', KEYS[1], 'm', string.format('%.0f', new_tat))
end
local fresh = math.max(new_tat, new_btat)
redis.call('PEXPIRE', KEYS[1], math.ceil((fresh - now) / 1000))
return {1}
