import { describe, expect, it } from 'vitest';
import { chunkAllocator } from './memory-chunks.js';
import {
  completedRecord,
  createdAtOf,
  expiresAtOf,
  fingerprintOf,
  inFlightRecord,
  leaseUntilOf,
  responseOf,
  setExpiresAt,
  setLeaseUntil,
  setState,
  setToken,
  stateOf,
  tokenOf,
} from './memory-records.js';

const NOW = 1_764_900_000_123;

describe('memory records', () => {
  it('keeps a new record in flight with its token, times and fingerprint', () => {
    const record = inFlightRecord(chunkAllocator(), 'fp-1', NOW + 7, NOW, NOW + 30_000, NOW + 86_400_000);
    expect(stateOf(record)).toBe('in_flight');
    expect([tokenOf(record), createdAtOf(record), leaseUntilOf(record), expiresAtOf(record)]).toEqual([
      NOW + 7,
      NOW,
      NOW + 30_000,
      NOW + 86_400_000,
    ]);
    expect(fingerprintOf(record)).toBe('fp-1');
  });

  it('changes its fields in place', () => {
    const record = inFlightRecord(chunkAllocator(), 'fp', 1, NOW, NOW, NOW);
    setState(record, 'released');
    setToken(record, Number.MAX_SAFE_INTEGER);
    setLeaseUntil(record, NOW + 1);
    setExpiresAt(record, NOW + 2);
    expect([stateOf(record), tokenOf(record), leaseUntilOf(record), expiresAtOf(record)]).toEqual([
      'released',
      Number.MAX_SAFE_INTEGER,
      NOW + 1,
      NOW + 2,
    ]);
  });

  it('completes into a new record with the same token, times and fingerprint, and the response byte for byte', () => {
    const allocate = chunkAllocator();
    const open = inFlightRecord(allocate, 'fp-2', 42, NOW, NOW + 5, NOW + 9);
    const body = Uint8Array.from([0x7b, 0x00, 0x80, 0xff, 0x7d]);
    const headers: [string, string][] = [
      ['content-type', 'application/json'],
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
    ];
    const done = completedRecord(allocate, open, { status: 201, headers, body });
    body.fill(0);
    headers[0] = ['x', 'y'];
    expect(stateOf(done)).toBe('completed');
    expect([tokenOf(done), createdAtOf(done), leaseUntilOf(done), expiresAtOf(done)]).toEqual([
      42,
      NOW,
      NOW + 5,
      NOW + 9,
    ]);
    expect(fingerprintOf(done)).toBe('fp-2');
    const response = responseOf(done);
    expect(response.status).toBe(201);
    expect(response.headers).toEqual([
      ['content-type', 'application/json'],
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
    ]);
    expect([...response.body]).toEqual([0x7b, 0x00, 0x80, 0xff, 0x7d]);
    expect(stateOf(open)).toBe('in_flight');
  });

  it('gives back every string exactly: Latin-1, other scripts, emoji and unpaired surrogates', () => {
    const texts = [
      '',
      'ascii',
      'caf\u00e9 \u00ff',
      '\u6f22\u5b57',
      'pay \u{1f4b3}',
      'lone \ud800 high',
      'lone \udc00 low',
    ];
    const allocate = chunkAllocator();
    for (const text of texts) {
      const open = inFlightRecord(allocate, text, 1, NOW, NOW, NOW);
      expect(fingerprintOf(open)).toBe(text);
      const done = completedRecord(allocate, open, { status: 200, headers: [[text, text]], body: new Uint8Array() });
      expect(fingerprintOf(done)).toBe(text);
      expect(responseOf(done).headers).toEqual([[text, text]]);
    }
  });

  it('keeps an empty body, no headers, and a body larger than a chunk', () => {
    const allocate = chunkAllocator();
    const empty = responseOf(
      completedRecord(allocate, inFlightRecord(allocate, 'f', 1, NOW, NOW, NOW), {
        status: 204,
        headers: [],
        body: new Uint8Array(),
      }),
    );
    expect(empty).toEqual({ status: 204, headers: [], body: Buffer.alloc(0) });
    const large = Buffer.alloc(100_000, 0x61);
    const kept = responseOf(
      completedRecord(allocate, inFlightRecord(allocate, 'f', 1, NOW, NOW, NOW), {
        status: 200,
        headers: [],
        body: large,
      }),
    );
    expect(Buffer.compare(kept.body, large)).toBe(0);
    expect(kept.body.buffer).not.toBe(large.buffer);
  });
});
