/**
 * The record layout of the Redis store and the Lua scripts behind its fenced operations.
 *
 * One record lives in two keys that share a hash tag, so both sit in one Cluster slot and a
 * script may touch both:
 *
 * - `<prefix>{<key>}`: one string, so that a claim can be one plain `SET … NX GET` (see
 *   `redis.ts`). An open record is `<state>|<token>|<ttl>|<flags>|<fingerprint>`, with state `I`
 *   (in flight) or `R` (released), `ttl` the claim's ttl in ms, and `flags` `0` or any of `s` (a
 *   step was saved in this lifetime of the key) and `w` (a duplicate waits for a change, so a
 *   completion or release publishes one). A completed one is
 *   `C|<fingerprint bytes>|<fingerprint><status>|<header bytes>|<headers as JSON><body>`.
 * - `<prefix>{<key>}:steps`: a hash of recovery points, step name → JSON text. It belongs to the
 *   record only while the record's flags hold `s`: the first step of a lifetime clears what an
 *   earlier, expired lifetime may have left.
 *
 * ```
 * absent ──CLAIM──▶ in_flight ──COMPLETE──▶ completed      (expiry: ttl)
 *                     │  ▲ └──RELEASE──▶ released          (expiry: ttl, steps kept)
 *                     │  └── CLAIM after the lease passed, or of a released record: token + 1
 *                     └── expiry: lease + ttl, set again by RENEW
 * ```
 *
 * The lease is the record's own expiry: an in-flight record expires exactly `lease + ttl` after
 * its claim or last renewal, so its lease has `PTTL - ttl` ms left. Redis's clock alone decides,
 * so app servers with skewed clocks agree on every lease, and no write needs the time.
 *
 * Every script is atomic for the same reason: Redis runs a script to completion before it runs
 * any other command, so a script's read of the record and its write are one indivisible step. No
 * other claim, completion or expiry can fall between the check and the write, on any number of
 * app servers. Numbers are written with `string.format('%d')`: Lua 5.1 numbers are doubles, and
 * `tostring` would turn a large one into `9.007199254741e+15`. Tokens are compared as strings.
 *
 * @module
 */

/**
 * Helpers the scripts start with (all but COMPLETE, which says why): integer formatting, an open
 * record's flags, and its fields (its state is the first byte) read and written. A completed
 * record is parsed by the client, never by a script.
 */
export const PRELUDE = `
local function int(n)
  return string.format('%d', n)
end
local function has(flags, flag)
  return string.find(flags, flag, 1, true) ~= nil
end
local function with(flags, flag)
  if has(flags, flag) then return flags end
  return (flags == '0' and '' or flags) .. flag
end
local function open_fields(rec)
  local a = string.find(rec, '|', 3, true)
  local b = string.find(rec, '|', a + 1, true)
  local c = string.find(rec, '|', b + 1, true)
  return string.sub(rec, 3, a - 1), string.sub(rec, a + 1, b - 1), string.sub(rec, b + 1, c - 1), string.sub(rec, c + 1)
end
local function in_flight(token, ttl, flags, fp)
  return 'I|' .. token .. '|' .. ttl .. '|' .. flags .. '|' .. fp
end
`;

/** The record's state and token as a fenced write expects them: `I|<token>|`. */
const OWNED = `
if not rec or string.sub(rec, 1, #ARGV[1] + 3) ~= 'I|' .. ARGV[1] .. '|' then
  return 'stale'
end
`;

/**
 * CLAIM, for what the plain `SET … NX GET` claim cannot decide alone: a record in flight or
 * released, or a server before Redis 7 that has no `SET … NX GET`. KEYS: record, steps. ARGV:
 * fingerprint, leaseMs, ttlMs, token for a new record. Replies `{'acquired', token, recovered,
 * step1, value1, …}`, `{'completed', record}` (the client checks the fingerprint and reads the
 * response), `{'in_flight', retryAfterMs}` or `{'mismatch'}`.
 *
 * Atomic because the read of the record and the write that creates or takes it over happen in
 * one script: of N concurrent claims exactly one finds the key absent (or its lease passed) and
 * writes its token; the others run after it and see that token's live lease.
 */
export const CLAIM_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
local keep = int(tonumber(ARGV[2]) + tonumber(ARGV[3]))
if not rec then
  redis.call('SET', KEYS[1], in_flight(ARGV[4], ARGV[3], '0', ARGV[1]), 'PX', keep)
  return {'acquired', ARGV[4], '0'}
end
local state = string.sub(rec, 1, 1)
if state == 'C' then
  return {'completed', rec}
end
local token, ttl, flags, fp = open_fields(rec)
if fp ~= ARGV[1] then
  return {'mismatch'}
end
if state == 'I' then
  local left = redis.call('PTTL', KEYS[1]) - tonumber(ttl)
  if left > 0 then
    return {'in_flight', int(left)}
  end
end
-- Released, or in flight with a lapsed lease: take it over under the next token.
local next_token = int(tonumber(token) + 1)
redis.call('SET', KEYS[1], in_flight(next_token, ARGV[3], flags, fp), 'PX', keep)
local reply = {'acquired', next_token, state == 'I' and '1' or '0'}
if has(flags, 's') then
  redis.call('PEXPIRE', KEYS[2], keep)
  local saved = redis.call('HGETALL', KEYS[2])
  for i = 1, #saved do
    reply[#reply + 1] = saved[i]
  end
end
return reply
`;

/**
 * COMPLETE. KEYS: record, steps. ARGV: token, `<status>|<header bytes>|<headers>`, body, ttlMs,
 * channel (empty: do not publish). Replies `'ok'` or `'stale'`. Publishes only when a waiter
 * marked the record (PEEK).
 *
 * Atomic because the fencing check (in flight, same token) and the write of the response are one
 * step: a claim that takes the key over cannot slip between them, so a stale owner never
 * overwrites a newer owner's record.
 *
 * Every first request runs it, so it does without the {@link PRELUDE}: Lua makes each of its
 * `local function`s anew, as a closure, on every call, which costs Redis measurable CPU on the
 * hottest script.
 */
export const COMPLETE_SCRIPT = `
local rec = redis.call('GET', KEYS[1])
${OWNED}
-- After 'I|<token>|': '<ttl>|<flags>|<fingerprint>'.
local ttl_end = string.find(rec, '|', #ARGV[1] + 4, true)
local flags_end = string.find(rec, '|', ttl_end + 1, true)
local flags = string.sub(rec, ttl_end + 1, flags_end - 1)
local fp = string.sub(rec, flags_end + 1)
redis.call('SET', KEYS[1], 'C|' .. #fp .. '|' .. fp .. ARGV[2] .. ARGV[3], 'PX', ARGV[4])
if flags ~= '0' then
  if string.find(flags, 's', 1, true) then
    redis.call('DEL', KEYS[2])
  end
  -- Nobody waits on most keys, and a Cluster relays every PUBLISH to every node.
  if ARGV[5] ~= '' and string.find(flags, 'w', 1, true) then
    redis.call('PUBLISH', ARGV[5], 'completed')
  end
end
return 'ok'
`;

/**
 * RELEASE. KEYS: record, steps. ARGV: token, ttlMs, channel (empty: do not publish).
 * Replies `'ok'` or `'stale'`.
 *
 * Atomic for the same reason as COMPLETE: the fencing check and the state change are one step.
 */
export const RELEASE_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
${OWNED}
local _, _, flags = open_fields(rec)
redis.call('SET', KEYS[1], 'R' .. string.sub(rec, 2), 'PX', ARGV[2])
if has(flags, 's') then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if ARGV[3] ~= '' and has(flags, 'w') then
  redis.call('PUBLISH', ARGV[3], 'released')
end
return 'ok'
`;

/**
 * RENEW. KEYS: record, steps. ARGV: token, leaseMs. Replies `'ok'` or `'stale'`.
 *
 * Atomic because the fencing check and the new expiry (the new lease plus the claim's ttl, which
 * is how the lease is kept) are one step: a takeover cannot happen between the check and the
 * write.
 */
export const RENEW_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
${OWNED}
local _, ttl, flags = open_fields(rec)
local keep = int(tonumber(ARGV[2]) + tonumber(ttl))
redis.call('PEXPIRE', KEYS[1], keep)
if has(flags, 's') then
  redis.call('PEXPIRE', KEYS[2], keep)
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
export const SAVE_STEP_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
${OWNED}
local token, ttl, flags, fp = open_fields(rec)
if not has(flags, 's') then
  -- The first step of this lifetime: whatever an earlier lifetime left is not this record's.
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], in_flight(token, ttl, with(flags, 's'), fp), 'KEEPTTL')
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  redis.call('PEXPIRE', KEYS[2], pttl)
end
return 'ok'
`;

/**
 * PEEK. KEYS: record. ARGV: `1` to mark an open record as waited on (its completion or release
 * will publish), or empty. Replies `{state or '', leaseRemainingMs}`. `waitForChange` uses it
 * once its subscription is up, to close the gap between a claim and the subscription, and to
 * poll while pub/sub is down. A waiter marks only after it subscribed, so a change after the
 * mark is published to it, and a change before it is what this PEEK returns.
 */
export const PEEK_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
if not rec then
  return {'', '0'}
end
local state = string.sub(rec, 1, 1)
if state ~= 'I' then
  return {state == 'C' and 'completed' or 'released', '0'}
end
local token, ttl, flags, fp = open_fields(rec)
if ARGV[1] == '1' and not has(flags, 'w') then
  redis.call('SET', KEYS[1], in_flight(token, ttl, with(flags, 'w'), fp), 'KEEPTTL')
end
return {'in_flight', int(redis.call('PTTL', KEYS[1]) - tonumber(ttl))}
`;
