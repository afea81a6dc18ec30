-- Every throttle and ban decision of one request, in one round trip (EVALSHA).
--
-- KEYS: the ban keys to look at (n_bans of them), then for each rule its counter key and its
-- "exceeded" counter key. ARGV[1]: the rules, fixed for a route (made once, so a request encodes
-- one argument, not nine per rule): "n_bans n_rules", then per rule a line of algorithm (1 fixed
-- window, 2 sliding window, 3 gcra), amount, period (ms), burst, ban_after, ban window (ms), ban
-- duration (ms) and the KEYS index of the ban key a ban of this rule sets; ARGV[1 + rule]: the
-- description stored with a ban the rule makes; then "want" (how many requests of this kind the
-- caller expects within a lease; 1: this one only), the longest lease (ms) and "ahead" (1: no
-- request of its own; the caller keeps every count). The clock is the
-- server's (TIME): every node and worker sees the same one.
--
-- A lease: when every rule has room for at least SHARE times more requests than the caller wants,
-- the script counts up to "want" of them at once and the caller admits the rest itself until the
-- lease ends. Leases never take more than 1/SHARE of a rule's room, so near a limit every request
-- is decided here, one by one, and counts stay exact; nothing is ever admitted beyond a limit.
--
-- Returns {0, granted, lease_ms} (admitted; granted - 1 more may be admitted by the caller within
-- lease_ms), {1, rule, retry_ms} (over a limit), {2, ban index, ttl_ms} (banned; -1: no expiry),
-- {3, rule, ban_ms} (over a limit, and now banned). A request over a limit is not counted against
-- any rule, so a limit of N admits exactly N.
local SHARE = 64
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spec = {}
for number in string.gmatch(ARGV[1], '%S+') do
  spec[#spec + 1] = tonumber(number)
end
local nb = spec[1]
local nr = spec[2]
local want = tonumber(ARGV[nr + 2] or '1')
local lease = tonumber(ARGV[nr + 3] or '0')
local ahead = ARGV[nr + 4] == '1'  -- asked before any request needs it: its refusal bans nobody

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

local tats = {}
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
    elseif want > 1 then
      want = math.min(want, math.floor((amount - count) / SHARE))
      local left = redis.call('PTTL', key)
      if left > 0 and left < lease then lease = left end
    end
  elseif algorithm == 2 then
    -- newest first: the entry at index i is outside the window when i + 1 requests fit
    while want > 1 do
      local index = amount - SHARE * want
      if index >= 0 then
        local entry = redis.call('LINDEX', key, index)
        if not entry or now - tonumber(entry) >= period then break end
      end
      want = math.floor(want / 4)
    end
    if want <= 1 then
      local oldest = redis.call('LINDEX', key, amount - 1)
      if oldest and now - tonumber(oldest) < period then
        retry = tonumber(oldest) + period - now
      end
    end
  else
    local emission = period / amount
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local allow_at = tat + emission - burst * emission
    if allow_at > now then
      retry = math.ceil(allow_at - now)
    else
      tats[r] = tat
      if want > 1 then want = math.min(want, math.floor((now - tat + burst * emission) / (SHARE * emission))) end
    end
  end
  if retry >= 0 then
    local ban_after = spec[a + 5]
    if ban_after > 0 and not ahead then
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

local n = math.max(1, want)
local stamp = string.format('%.0f', now)
local stamps = nil
for r = 1, nr do
  local a = 2 + (r - 1) * 8
  local algorithm = spec[a + 1]
  local amount = spec[a + 2]
  local key = KEYS[nb + (r - 1) * 2 + 1]
  if algorithm == 1 then
    if redis.call('INCRBY', key, n) == n then redis.call('PEXPIRE', key, spec[a + 3]) end
  elseif algorithm == 2 then
    if n == 1 then
      redis.call('LPUSH', key, stamp)
    else
      if not stamps then
        stamps = {}
        for i = 1, n do stamps[i] = stamp end
      end
      redis.call('LPUSH', key, unpack(stamps))
    end
    redis.call('LTRIM', key, 0, amount - 1)
    redis.call('PEXPIRE', key, spec[a + 3])
  else
    local tat = tats[r] + n * spec[a + 3] / amount
    redis.call('SET', key, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
  end
end
if n == 1 and not ahead then return {0, 1, 0} end
return {0, n, lease}
