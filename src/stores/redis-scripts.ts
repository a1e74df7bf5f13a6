/**
 * The Lua scripts behind the Redis store, one per store operation.
 *
 * Every script is atomic for the same reason: Redis runs a script to completion before it runs
 * any other command, so a script's read of the record (state, fingerprint, token, lease) and its
 * write are one indivisible step. No other claim, completion or expiry can fall between the
 * check and the write, on any number of app servers.
 *
 * One record lives in two keys that share a hash tag, so both sit in one Cluster slot and a
 * script may touch both:
 *
 * - `<prefix>{<key>}`: a hash with `state` (`in_flight` | `released` | `completed`), `fp`,
 *   `token`, `lease` (lease deadline, ms since the epoch) and `ttl` (the claim's ttl in ms), both
 *   read only while the state is `in_flight` and left in place after it, `steps` (`1` once a
 *   step was saved), and once completed `status`, `headers` (JSON) and `body` (bytes).
 * - `<prefix>{<key>}:steps`: a hash of recovery points, step name → JSON text.
 *
 * ```
 * absent ──CLAIM──▶ in_flight ──COMPLETE──▶ completed      (expiry: ttl)
 *                     │  ▲ └──RELEASE──▶ released          (expiry: ttl, steps kept)
 *                     │  └── CLAIM after the lease passed, or of a released record: token + 1
 *                     └── expiry: lease + ttl, pushed by RENEW; never before the live lease ends
 * ```
 *
 * Time is Redis's own (`TIME`), so app servers with skewed clocks agree on every lease. Numbers
 * are written with `string.format('%d')`: Lua 5.1 numbers are doubles, and `tostring` would turn
 * a large one into `1.7e+12`. Tokens travel as decimal strings and are compared as strings.
 *
 * @module
 */

/** Helpers every script starts with: the server's clock in ms, and integer formatting. */
const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n)
  return string.format('%d', n)
end
`;

/**
 * CLAIM. KEYS: record, steps. ARGV: fingerprint, leaseMs, ttlMs.
 * Replies `{'acquired', token, recovered, step1, value1, …}`, `{'replay', status, headers, body}`,
 * `{'in_flight', retryAfterMs}` or `{'mismatch'}`.
 *
 * Atomic because the existence check and the write that creates or takes over the record happen
 * in one script: of N concurrent claims exactly one finds the key absent (or its lease passed)
 * and writes its token; the others run after it and see that token's live lease.
 */
export const CLAIM_SCRIPT = `${PRELUDE}
-- One read for every branch: a replay needs nothing else, not even the clock.
local rec = redis.call('HMGET', KEYS[1], 'state', 'fp', 'token', 'lease', 'status', 'headers', 'body')
local state = rec[1]
if state and rec[2] ~= ARGV[1] then
  return {'mismatch'}
end
if state == 'completed' then
  return {'replay', rec[5], rec[6], rec[7]}
end
local now = now_ms()
local lease_ms = tonumber(ARGV[2])
local keep = int(lease_ms + tonumber(ARGV[3]))
if not state then
  -- A fresh lifetime starts its tokens at the current time, above any token an earlier,
  -- expired lifetime of this key handed out.
  local token = int(now)
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'in_flight', 'fp', ARGV[1], 'token', token,
    'lease', int(now + lease_ms), 'ttl', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], keep)
  return {'acquired', token, '0'}
end
if state == 'in_flight' then
  local lease_until = tonumber(rec[4])
  if lease_until > now then
    return {'in_flight', int(lease_until - now)}
  end
end
-- Released, or in flight with a lapsed lease: take it over under the next token.
local token = int(tonumber(rec[3]) + 1)
redis.call('HSET', KEYS[1], 'state', 'in_flight', 'token', token, 'lease', int(now + lease_ms), 'ttl', ARGV[3])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
local reply = {'acquired', token, state == 'in_flight' and '1' or '0'}
local steps = redis.call('HGETALL', KEYS[2])
for i = 1, #steps do
  reply[#reply + 1] = steps[i]
end
return reply
`;

/**
 * COMPLETE. KEYS: record, steps. ARGV: token, status, headers (JSON), body, ttlMs, channel
 * (empty: do not publish). Replies `'ok'` or `'stale'`.
 *
 * Atomic because the fencing check (in flight, same token) and the write of the response are one
 * step: a claim that takes the key over cannot slip between them, so a stale owner never
 * overwrites a newer owner's record.
 */
export const COMPLETE_SCRIPT = `
local rec = redis.call('HMGET', KEYS[1], 'state', 'token', 'steps')
if rec[1] ~= 'in_flight' or rec[2] ~= ARGV[1] then
  return 'stale'
end
-- Every command a script runs costs Redis CPU on every fresh request: the lease fields stay
-- (nothing reads them once the state is not in_flight), and the steps key is only deleted
-- when a step was saved.
redis.call('HSET', KEYS[1], 'state', 'completed', 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4])
if rec[3] then
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], 'completed')
end
return 'ok'
`;

/**
 * RELEASE. KEYS: record, steps. ARGV: token, ttlMs, channel (empty: do not publish).
 * Replies `'ok'` or `'stale'`.
 *
 * Atomic for the same reason as COMPLETE: the fencing check and the state change are one step.
 */
export const RELEASE_SCRIPT = `
local rec = redis.call('HMGET', KEYS[1], 'state', 'token')
if rec[1] ~= 'in_flight' or rec[2] ~= ARGV[1] then
  return 'stale'
end
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], 'released')
end
return 'ok'
`;

/**
 * RENEW. KEYS: record, steps. ARGV: token, leaseMs. Replies `'ok'` or `'stale'`.
 *
 * Atomic because the fencing check, the new lease deadline and the pushed expiry are one step: a
 * takeover cannot happen between the check and the write, and the record's expiry is never left
 * earlier than the lease just granted.
 */
export const RENEW_SCRIPT = `${PRELUDE}
local rec = redis.call('HMGET', KEYS[1], 'state', 'token', 'ttl')
if rec[1] ~= 'in_flight' or rec[2] ~= ARGV[1] then
  return 'stale'
end
local lease_ms = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease', int(now_ms() + lease_ms))
local keep = lease_ms + (tonumber(rec[3]) or 0)
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], int(keep))
  redis.call('PEXPIRE', KEYS[2], int(keep))
end
return 'ok'
`;

/**
 * SAVE_STEP. KEYS: record, steps. ARGV: token, name, value. Replies `'ok'` or `'stale'`.
 *
 * Atomic because the fencing check and the write of the step are one step: a worker that lost
 * its lease cannot add a recovery point to the newer owner's record. The steps key takes the
 * record's remaining lifetime, so the two expire together.
 */
export const SAVE_STEP_SCRIPT = `
local rec = redis.call('HMGET', KEYS[1], 'state', 'token')
if rec[1] ~= 'in_flight' or rec[2] ~= ARGV[1] then
  return 'stale'
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'steps', '1')
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('PEXPIRE', KEYS[2], pttl)
end
return 'ok'
`;

/**
 * PEEK. KEYS: record. Replies `{state or '', leaseRemainingMs}`. Read-only; `waitForChange` uses
 * it to close the gap between a claim and its subscription, and to poll when pub/sub is down.
 * Redis's clock again, so the remaining lease is what the next CLAIM will see.
 */
export const PEEK_SCRIPT = `${PRELUDE}
local rec = redis.call('HMGET', KEYS[1], 'state', 'lease')
if rec[1] ~= 'in_flight' then
  return {rec[1] or '', '0'}
end
return {'in_flight', int(tonumber(rec[2]) - now_ms())}
`;
