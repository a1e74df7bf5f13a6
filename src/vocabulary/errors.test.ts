import { describe, expect, it } from 'vitest';
import * as client from '../client/index.js';
import * as gateway from '../gateway/index.js';
import * as core from '../index.js';
import * as encryption from '../stores/encrypted.js';
import * as postgres from '../stores/postgres.js';
import { IdempotencyError } from './errors.js';

// Codes, classes, statuses and problem types are public forever: this table is the contract,
// and docs/protocol.md's error table must say the same (test/docs/errors.test.ts checks it).
/** Names a class had before it was named after its code, and the class they now name. */
const DEPRECATED: Record<string, string> = {
  IdempotencyStoreError: 'IdempotencyStoreUnavailableError',
  IdempotencyHandlerError: 'IdempotencyHandlerFailedError',
  IdempotencyUpstreamError: 'IdempotencyUpstreamUnreachableError',
  IdempotencyConfigError: 'IdempotencyConfigInvalidError',
  IdempotencyDependencyError: 'IdempotencyDependencyMissingError',
};

const PINNED = [
  ['IdempotencyKeyMissingError', 'IDEMPO_KEY_MISSING', 400, 'key-missing'],
  ['IdempotencyKeyInvalidError', 'IDEMPO_KEY_INVALID', 400, 'key-invalid'],
  ['IdempotencyConflictError', 'IDEMPO_CONFLICT', 409, 'conflict'],
  ['IdempotencyMismatchError', 'IDEMPO_MISMATCH', 422, 'mismatch'],
  ['IdempotencyBodyTooLargeError', 'IDEMPO_BODY_TOO_LARGE', 413, 'body-too-large'],
  ['IdempotencyRateLimitedError', 'IDEMPO_RATE_LIMITED', 429, 'rate-limited'],
  ['IdempotencySignatureMissingError', 'IDEMPO_SIGNATURE_MISSING', 401, 'signature-missing'],
  ['IdempotencySignatureInvalidError', 'IDEMPO_SIGNATURE_INVALID', 401, 'signature-invalid'],
  ['IdempotencySignatureExpiredError', 'IDEMPO_SIGNATURE_EXPIRED', 401, 'signature-expired'],
  ['IdempotencyStoreUnavailableError', 'IDEMPO_STORE_UNAVAILABLE', 503, 'store-unavailable'],
  ['IdempotencyHandlerFailedError', 'IDEMPO_HANDLER_FAILED', 500, 'handler-failed'],
  ['IdempotencyLeaseLostError', 'IDEMPO_LEASE_LOST', 409, 'lease-lost'],
  ['IdempotencyUpstreamUnreachableError', 'IDEMPO_UPSTREAM_UNREACHABLE', 502, 'upstream-unreachable'],
  ['IdempotencyUpstreamTimeoutError', 'IDEMPO_UPSTREAM_TIMEOUT', 504, 'upstream-timeout'],
  ['IdempotencyUpstreamFailedError', 'IDEMPO_UPSTREAM_FAILED', 502, 'upstream-failed'],
  ['IdempotencyResultNotStoredError', 'IDEMPO_RESULT_NOT_STORED', 503, 'result-not-stored'],
  ['IdempotencyResponseNotKeptError', 'IDEMPO_RESPONSE_NOT_KEPT', 410, 'response-not-kept'],
  ['IdempotencyConfigInvalidError', 'IDEMPO_CONFIG_INVALID', 500, 'config-invalid'],
  ['IdempotencyDependencyMissingError', 'IDEMPO_DEPENDENCY_MISSING', 500, 'dependency-missing'],
  ['IdempotencyTransactionUnsupportedError', 'IDEMPO_TRANSACTION_UNSUPPORTED', 500, 'transaction-unsupported'],
  ['IdempotencyStoreNotMigratedError', 'IDEMPO_STORE_NOT_MIGRATED', 503, 'store-not-migrated'],
  ['IdempotencyRetriesExhaustedError', 'IDEMPO_RETRIES_EXHAUSTED', 503, 'retries-exhausted'],
  ['IdempotencyGatewayDrainingError', 'IDEMPO_GATEWAY_DRAINING', 503, 'gateway-draining'],
  ['IdempotencyRecordUnreadableError', 'IDEMPO_RECORD_UNREADABLE', 503, 'record-unreadable'],
] as const;

// Errors that belong to one store or to the client are exported from that subpath, not the core.
const exportsOf = { ...core, ...postgres, ...client, ...gateway, ...encryption } as unknown as Record<string, unknown>;

describe('error classes', () => {
  it.each(PINNED)('%s has code %s, status %i and type …/%s', (name, code, status, slug) => {
    const Class = exportsOf[name] as new (m: string, o?: { cause?: unknown }) => IdempotencyError;
    expect(Class).toBeTypeOf('function');
    const cause = new Error('root');
    const error = new (Class as new (m: string, o?: { cause?: unknown }) => IdempotencyError)('message', { cause });
    expect(error).toBeInstanceOf(IdempotencyError);
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe(name);
    expect(error.code).toBe(code);
    expect(error.status).toBe(status);
    expect(error.type).toBe(`https://idempo.dev/problems/${slug}`);
    expect(error.cause).toBe(cause);
  });

  it('exports no error class the pinned list does not name, besides the deprecated names', () => {
    const exported = Object.entries(exportsOf)
      .filter(([, value]) => typeof value === 'function' && value.prototype instanceof IdempotencyError)
      .filter(([name]) => !(name in DEPRECATED))
      .map(([name]) => name)
      .sort();
    expect(exported).toEqual(PINNED.map(([name]) => name).sort());
  });

  it('names every class after its code: IDEMPO_STORE_UNAVAILABLE is IdempotencyStoreUnavailableError', () => {
    for (const [name, code] of PINNED) {
      const words = (code as string)
        .replace(/^IDEMPO_/, '')
        .toLowerCase()
        .split('_');
      expect(name).toBe(`Idempotency${words.map((w) => w[0]?.toUpperCase() + w.slice(1)).join('')}Error`);
    }
  });

  it.each(Object.entries(DEPRECATED))('keeps the old name %s as the same class as %s', (old, current) => {
    expect(exportsOf[old]).toBe(exportsOf[current]);
    const error = new (exportsOf[old] as new (m: string) => IdempotencyError)('message');
    expect(error).toBeInstanceOf(exportsOf[current] as typeof IdempotencyError);
    expect(error.name).toBe(current);
  });

  it('spells every code IDEMPO_ plus upper-case words, and no two alike', () => {
    const codes = PINNED.map(([, code]) => code);
    for (const code of codes) expect(code).toMatch(/^IDEMPO_[A-Z]+(_[A-Z]+)*$/);
    expect(new Set(codes).size).toBe(codes.length);
  });
});
