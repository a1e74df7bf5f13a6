/**
 * How the Redis store writes a record and reads Redis's replies: the completed record's byte
 * layout, the claim's token, and the checks that turn an unexpected reply into a store error.
 *
 * @module
 */
import { isAscii } from 'node:buffer';
import {
  type ClaimResult,
  type FencedResult,
  IdempotencyStoreUnavailableError,
  type StoredResponse,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';

/** A reply of ioredis in Buffer mode: scripts answer strings, numbers, arrays and bulk strings. */
export type Reply = Buffer | string | number | null | Reply[];

export function text(value: Reply | undefined): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  throw new IdempotencyStoreUnavailableError(`Unexpected reply from Redis: ${String(value)}`);
}

/** Past this size a body goes as bytes whatever it holds: copying it, not the calls, is the cost. */
const TEXT_BODY_MAX = 16_384;

/**
 * A response body as a script argument: text when it is small and all ASCII (most API bodies,
 * JSON), so that ioredis writes the whole command as one string; bytes otherwise. With one Buffer
 * among its arguments, ioredis writes the command in buffer mode, where every string argument
 * costs two more calls into V8 (measure, copy): about 2 µs of the 15 µs of CPU a claim and its
 * completion take, store alone. ASCII bytes read as Latin-1 are a plain copy, and written back as
 * UTF-8 they are the same bytes. Other text would be decoded to UTF-16 and encoded again, and a
 * large body copied twice more, which costs more than the calls (measured at 4 and 64 KiB).
 */
export function bodyArgument(body: Uint8Array): string | Buffer {
  const bytes = asBuffer(body);
  return bytes.length <= TEXT_BODY_MAX && isAscii(bytes) ? bytes.toString('latin1') : bytes;
}

export function ms(value: number): string {
  return String(Math.max(1, Math.ceil(value)));
}

/**
 * The token of a new record: the app server's clock in ms, times 1024, plus 10 random bits.
 * A script would use Redis's clock, but the plain claim has no script. Tokens still grow across
 * a key's lifetimes, as the store contract asks, unless two app servers' clocks differ by more
 * than the earlier lifetime's lease + ttl; and even then a stale owner's token equals the new
 * one only if the clocks differ by exactly that and the random bits agree. Below 2^53 until the
 * year 2248.
 */
export function newToken(): number {
  return Date.now() * 1024 + Math.floor(Math.random() * 1024);
}

export const COMPLETED = 0x43; // 'C'
const BAR = 0x7c; // '|'

/** What precedes the body in a completed record: `<status>|<header bytes>|<headers as JSON>`. */
export function responseHead(response: StoredResponse): string {
  const headers = JSON.stringify(response.headers);
  return `${response.status}|${Buffer.byteLength(headers)}|${headers}`;
}

/** The response in a completed record, whatever its fingerprint (for operations, not claims). */
export function completedResponse(value: Buffer): StoredResponse {
  const fpEnd = value.indexOf(BAR, 2);
  const fingerprint = value.toString('utf8', fpEnd + 1, fpEnd + 1 + Number(value.toString('latin1', 2, fpEnd)));
  const claim = completedClaim(value, fingerprint);
  if (claim.status !== 'replay') throw new IdempotencyStoreUnavailableError('A stored response in Redis is malformed');
  return claim.response;
}

/**
 * A completed record, `C|<fingerprint bytes>|<fingerprint><status>|<header bytes>|<headers><body>`,
 * as the claim's answer: its response, or a mismatch if the fingerprint differs. The body is a
 * view of the reply, not a copy.
 */
export function completedClaim(value: Reply | undefined, fingerprint: string): ClaimResult {
  if (!Buffer.isBuffer(value) || value[0] !== COMPLETED) {
    throw new IdempotencyStoreUnavailableError(`Unexpected record in Redis: ${String(value).slice(0, 40)}`);
  }
  const fpEnd = value.indexOf(BAR, 2);
  const fpStart = fpEnd + 1;
  const statusStart = fpStart + Number(value.toString('latin1', 2, fpEnd));
  const statusEnd = value.indexOf(BAR, statusStart);
  const lengthEnd = statusEnd < 0 ? -1 : value.indexOf(BAR, statusEnd + 1);
  const headersEnd = lengthEnd + 1 + Number(value.toString('latin1', statusEnd + 1, lengthEnd));
  if (fpEnd < 0 || lengthEnd < 0 || !(headersEnd <= value.length)) {
    throw new IdempotencyStoreUnavailableError('A stored response in Redis is cut short or malformed');
  }
  if (value.toString('utf8', fpStart, statusStart) !== fingerprint) return { status: 'mismatch' };
  return {
    status: 'replay',
    response: {
      status: Number(value.toString('latin1', statusStart, statusEnd)),
      headers: parseHeaders(value.toString('utf8', lengthEnd + 1, headersEnd)),
      body: value.subarray(headersEnd),
    },
  };
}

function parseHeaders(json: string): [string, string][] {
  try {
    return JSON.parse(json) as [string, string][];
  } catch (error) {
    throw new IdempotencyStoreUnavailableError('A stored response in Redis has unreadable headers', { cause: error });
  }
}

export function fenced(reply: Reply): FencedResult {
  const value = text(reply);
  if (value === 'ok' || value === 'stale') return value;
  throw new IdempotencyStoreUnavailableError(`Unexpected reply from Redis: ${value}`);
}
