"""The Redis scripts: one reserves every scope of a call at once (all or nothing), one settles.

Items, one per KEYS entry, with five ARGV values each after the first (the lease id):
kind, limit, cost, a, b.

- `w`, a sliding window of `b` slots of `a` ms: a hash of slot number -> amount, with the
  total in `t` and the last slot already dropped in `h`. A slot leaves the window `b + 1`
  slots after its own, so the window always covers at least `b` slots' time.
- `p`, calls in flight: a sorted set of lease ids scored by when the lease lapses (`a` ms
  from now), so a gateway that dies cannot hold a slot for ever.
- `c`, a counter for one budget period (the key names the period): expires at `a` (ms since
  the epoch); `b` is when the period ends.

The clock is Redis's own (TIME), so every gateway instance sees the same windows.
"""

RESERVE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = ARGV[1]
local used = {}
local state = {}
local refused, refused_wait = 0, -2
for i = 1, #KEYS do
  local j = 1 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local limit, cost = tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  local a, b = tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5])
  local key = KEYS[i]
  local u, wait = 0, nil
  if kind == 'w' then
    local slot = math.floor(now / a)
    local upto = slot - b - 1
    local hv = redis.call('HMGET', key, 't', 'h')
    u = tonumber(hv[1]) or 0
    local h = tonumber(hv[2])
    if h == nil then
      state[i] = upto
      u = 0
    elseif upto > h then
      if u <= 0 or upto - h > b then
        redis.call('DEL', key)
        u = 0
        state[i] = upto
      else
        for s = h + 1, upto do
          local v = tonumber(redis.call('HGET', key, s))
          if v then
            u = u - v
            redis.call('HDEL', key, s)
          end
        end
        redis.call('HSET', key, 't', u, 'h', upto)
      end
    end
    if u + cost > limit then
      wait = -1
      if cost <= limit then
        local need = u + cost - limit
        local freed = 0
        for s = math.max(upto, h or upto) + 1, slot do
          local v = tonumber(redis.call('HGET', key, s))
          if v then
            freed = freed + v
            if freed >= need then
              wait = (s + b + 1) * a - now
              break
            end
          end
        end
        if wait < 0 then wait = (slot + b + 1) * a - now end
      end
    end
  elseif kind == 'p' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    u = redis.call('ZCARD', key)
    if u + cost > limit then
      wait = 1000
      if cost > limit then wait = -1 end
    end
  else
    u = tonumber(redis.call('GET', key)) or 0
    if u + cost > limit then wait = -1 end
  end
  if wait ~= nil then
    if refused == 0 or wait == -1 or (refused_wait ~= -1 and wait > refused_wait) then
      refused, refused_wait = i, wait
    end
  end
  used[i] = u
end
if refused > 0 then
  return {0, now, refused, refused_wait, used[refused]}
end
local out = {1, now}
for i = 1, #KEYS do
  local j = 1 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local cost = tonumber(ARGV[j + 3])
  local a, b = tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5])
  local key = KEYS[i]
  if kind == 'w' then
    if state[i] ~= nil then redis.call('HSET', key, 'h', state[i]) end
    if cost ~= 0 then
      redis.call('HINCRBY', key, math.floor(now / a), cost)
      redis.call('HINCRBY', key, 't', cost)
    end
    redis.call('PEXPIRE', key, (b + 2) * a)
  elseif kind == 'p' then
    redis.call('ZADD', key, now + a, lease)
    redis.call('PEXPIRE', key, a)
  else
    if cost ~= 0 then redis.call('INCRBY', key, cost) end
    redis.call('PEXPIREAT', key, a)
  end
  out[#out + 1] = used[i] + cost
end
return out
"""

# Settles one call: ARGV[1] is the lease id, then four values per item: kind, delta, a, b,
# and for a window the slot the reservation went into (ARGV has five per item). Returns the
# amount each item stands at afterwards.
SETTLE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local j = 1 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local delta = tonumber(ARGV[j + 2])
  local a, b, slot = tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5])
  local key = KEYS[i]
  local u = 0
  if kind == 'w' then
    local hv = redis.call('HMGET', key, 't', 'h', slot)
    u = tonumber(hv[1]) or 0
    local h = tonumber(hv[2])
    local v = tonumber(hv[3])
    if delta ~= 0 and h ~= nil and slot > h and slot > math.floor(now / a) - b - 1 and v then
      if delta < -v then delta = -v end
      redis.call('HINCRBY', key, slot, delta)
      u = redis.call('HINCRBY', key, 't', delta)
    end
  elseif kind == 'p' then
    redis.call('ZREM', key, lease)
  else
    if delta ~= 0 and redis.call('EXISTS', key) == 1 then
      u = redis.call('INCRBY', key, delta)
      if u < 0 then
        redis.call('SET', key, 0, 'KEEPTTL')
        u = 0
      end
    else
      u = tonumber(redis.call('GET', key)) or 0
    end
  end
  out[i] = u
end
return out
"""

# What each item stands at, without changing anything (for `/v1/key/info`): same items as
# RESERVE with cost 0.
USAGE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
for i = 1, #KEYS do
  local j = 1 + (i - 1) * 5
  local kind = ARGV[j + 1]
  local a, b = tonumber(ARGV[j + 4]), tonumber(ARGV[j + 5])
  local key = KEYS[i]
  local u = 0
  if kind == 'w' then
    local upto = math.floor(now / a) - b - 1
    local all = redis.call('HGETALL', key)
    for k = 1, #all, 2 do
      local s = tonumber(all[k])
      if s ~= nil and s > upto then u = u + tonumber(all[k + 1]) end
    end
  elseif kind == 'p' then
    u = redis.call('ZCOUNT', key, now, '+inf')
  else
    u = tonumber(redis.call('GET', key)) or 0
  end
  out[#out + 1] = u
end
return out
"""
