/**
 * The engine over an encrypted memory store: the synchronous fast path is the wrapper's own (so
 * what the engine stores is sealed), replays are byte for byte, and a record that fails
 * authentication is answered 503 with nothing run, never replayed.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createIdempotency } from '../../src/engine/engine.js';
import { encryptStore } from '../../src/stores/encrypted.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import type { IdempotencyStore, StoredResponse } from '../../src/vocabulary/index.js';

const OPTIONS = { keys: { k1: randomBytes(32) }, currentKeyId: 'k1', fingerprintKey: randomBytes(32) };

function request(key: string, body = '{"amount":100}') {
  return new Request('http://api.test/pay', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body,
  });
}

async function onlyRecord(store: IdempotencyStore) {
  const page = await (store.list as NonNullable<IdempotencyStore['list']>)({});
  expect(page.records).toHaveLength(1);
  return page.records[0] as NonNullable<(typeof page.records)[0]>;
}

describe('engine over an encrypted memory store', () => {
  it('stores sealed records through the wrapper’s synchronous operations and replays them', async () => {
    const inner = createMemoryStore();
    const store = encryptStore(inner, OPTIONS);
    expect(store.sync?.store).toBe(store);
    let runs = 0;
    const idem = createIdempotency({ store });
    const handler = async () => {
      runs++;
      return new Response('{"iban":"DE89-secret"}', { status: 201, headers: { 'x-receipt': 'r-1' } });
    };
    const first = await idem.handle(request('e-1'), handler);
    expect(first.status).toBe(201);
    const replay = await idem.handle(request('e-1'), handler);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('x-receipt')).toBe('r-1');
    expect(await replay.text()).toBe('{"iban":"DE89-secret"}');
    expect(runs).toBe(1);

    const raw = await onlyRecord(inner);
    expect(raw.response?.status).toBe(0);
    expect(raw.response?.headers).toEqual([]);
    expect(Buffer.from(raw.response?.body ?? []).toString('latin1')).not.toContain('DE89');
    expect(store.keyIdOf(raw.response as StoredResponse)).toBe('k1');

    // A reused key with another body is still a mismatch.
    expect((await idem.handle(request('e-1', '{"amount":101}'), handler)).status).toBe(422);
    expect(runs).toBe(1);
  });

  it('answers 503 for a record that fails authentication, and runs nothing', async () => {
    const inner = createMemoryStore();
    const store = encryptStore(inner, OPTIONS);
    const events: string[] = [];
    const idem = createIdempotency({ store, onEvent: (event) => events.push(event.type) });
    let runs = 0;
    const handler = async () => {
      runs++;
      return new Response('ok', { status: 201 });
    };
    await idem.handle(request('e-2'), handler);
    const raw = await onlyRecord(inner);
    (raw.response as StoredResponse).body[30] = ((raw.response as StoredResponse).body[30] as number) ^ 1;
    const tampered = await idem.handle(request('e-2'), handler);
    expect(tampered.status).toBe(503);
    expect(((await tampered.json()) as { code: string }).code).toBe('IDEMPO_STORE_UNAVAILABLE');
    expect(tampered.headers.get('idempotent-replayed')).toBeNull();
    expect(runs).toBe(1);
    expect(events).toContain('store_error');
  });
});
