-- Every throttle and ban decision of one request, in one round trip (EVALSHA).
--
-- KEYS: the ban keys to look at (n_bans of them), then for each rule its counter key and its
-- "exceeded" counter key. ARGV[1]: the rules, fixed for a route (made once, so a request encodes
-- one argument, not nine per rule): "n_bans n_rules", then per rule a line of algorithm (1 fixed
-- window, 2 sliding window, 3 gcra), amount, period (ms), burst, ban_after, ban window (ms), ban
-- duration (ms) and the KEYS index of the ban key a ban of this rule sets; ARGV[1 + rule]: the
-- description stored with a ban the rule makes. The clock is the server's (TIME): every node and
-- worker sees the same one.
--
-- Returns {0} (admitted), {1, rule, retry_ms} (over a limit), {2, ban index, ttl_ms} (banned; -1:
-- no expiry), {3, rule, ban_ms} (over a limit, and now banned). A request over a limit is not
-- counted against any rule, so a limit of N admits exactly N.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spec = {}
for number in string.gmatch(ARGV[1], '%S+') do
  spec[#spec + 1] = tonumber(number)
end
local nb = spec[1]
local nr = spec[2]

local looked = {}
for i = 1, nb do
  if not looked[KEYS[i]] then  -- a rule keyed by the address shares the address's ban
    looked[KEYS[i]] = true
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl ~= -2 then
      return {2, i, ttl}
    end
  end
end

local commits = {}
for r = 1, nr do
  local a = 2 + (r - 1) * 8
  local algorithm = spec[a + 1]
  local amount = spec[a + 2]
  local period = spec[a + 3]
  local burst = spec[a + 4]
  local key = KEYS[nb + (r - 1) * 2 + 1]
  local retry = -1
  if algorithm == 1 then
    local count = tonumber(redis.call('GET', key) or '0')
    if count >= amount then
      retry = redis.call('PTTL', key)
      if retry < 0 then retry = period end
    end
  elseif algorithm == 2 then
    local oldest = redis.call('LINDEX', key, amount - 1)
    if oldest and now - tonumber(oldest) < period then
      retry = tonumber(oldest) + period - now
    end
  else
    local emission = period / amount
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local allow_at = tat + emission - burst * emission
    if allow_at > now then
      retry = math.ceil(allow_at - now)
    else
      commits[r] = tat + emission
    end
  end
  if retry >= 0 then
    local ban_after = spec[a + 5]
    if ban_after > 0 then
      local exceeded_key = KEYS[nb + (r - 1) * 2 + 2]
      local exceeded = redis.call('INCR', exceeded_key)
      if exceeded == 1 then redis.call('PEXPIRE', exceeded_key, spec[a + 6]) end
      if exceeded >= ban_after then
        local ban_for = spec[a + 7]
        redis.call('SET', KEYS[spec[a + 8]], ARGV[1 + r], 'PX', math.floor(ban_for))
        redis.call('DEL', exceeded_key)
        return {3, r, ban_for}
      end
    end
    return {1, r, retry}
  end
end

for r = 1, nr do
  local a = 2 + (r - 1) * 8
  local algorithm = spec[a + 1]
  local amount = spec[a + 2]
  local key = KEYS[nb + (r - 1) * 2 + 1]
  if algorithm == 1 then
    if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, spec[a + 3]) end
  elseif algorithm == 2 then
    redis.call('LPUSH', key, string.format('%.0f', now))
    redis.call('LTRIM', key, 0, amount - 1)
    redis.call('PEXPIRE', key, spec[a + 3])
  else
    redis.call('SET', key, string.format('%.3f', commits[r]), 'PX', math.max(1, math.ceil(commits[r] - now)))
  end
end
return {0}
