import { type ChildProcess, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteStore } from '../../src/stores/sqlite.js';
import { exitOf, freePort, ROOT, sleep } from '../helpers/servers.js';

// examples/webhooks/receiver.js as a real process, and a sender that behaves like a provider's:
// it signs every attempt afresh and delivers each event until it sees a 2xx, sometimes several
// copies at once, and keeps going while the receiver is SIGKILLed and restarted on the same port.
const SECRET = `whsec_${randomBytes(16).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'idempo-webhooks-'));
const dbPath = join(dir, 'webhooks.db');
let port: number;
let url: string;
const children = new Set<ChildProcess>();

type WebhookEvent = { id: string; type: string; data: { amount: number } };
/** Every answer a valid delivery got (connection failures are counted apart). */
const answers: { event: string; status: number; body: string }[] = [];
let cutDeliveries = 0;

beforeAll(async () => {
  port = await freePort();
  url = `http://127.0.0.1:${port}/webhooks`;
});
afterAll(async () => {
  for (const child of children) {
    child.kill('SIGKILL');
    await exitOf(child);
  }
  rmSync(dir, { recursive: true, force: true });
});

async function startReceiver(env: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'examples/webhooks/receiver.js')], {
    cwd: ROOT,
    env: {
      ...process.env,
      WEBHOOK_SECRET: SECRET,
      IDEMPO_DB: dbPath,
      PORT: String(port),
      LEASE: '2s',
      WAIT_TIMEOUT: '1s',
      HANDLE_DELAY_MS: '150',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('listening')) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`receiver exited (${code ?? signal}) before listening`)));
  });
  return child;
}

async function kill(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  await exitOf(child);
}

const now = () => Math.floor(Date.now() / 1000);
function sign(body: string, t = now(), secret = SECRET): string {
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`;
}

async function post(body: string, signature?: string) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(signature ? { 'webhook-signature': signature } : {}) },
    body,
    signal: AbortSignal.timeout(5_000),
  });
  return { status: response.status, body: await response.text() };
}

/** Delivers until a 2xx, as a provider does: each attempt signed anew, any other outcome retried. */
async function deliver(event: WebhookEvent): Promise<void> {
  const body = JSON.stringify(event);
  const deadline = Date.now() + 15_000;
  for (let attempt = 0; ; attempt++) {
    try {
      const answer = await post(body, sign(body));
      answers.push({ event: event.id, ...answer });
      if (answer.status >= 200 && answer.status < 300) return;
    } catch {
      cutDeliveries++; // the receiver is down, or died with this delivery open
    }
    if (Date.now() > deadline) throw new Error(`${event.id} was never acknowledged`);
    await sleep(Math.min(50 * 2 ** attempt, 400));
  }
}

const eventsOf = (from: number, to: number): WebhookEvent[] =>
  Array.from({ length: to - from }, (_, i) => ({
    id: `evt_${from + i}`,
    type: 'invoice.paid',
    data: { amount: 100 * (from + i) },
  }));

function read<T>(sql: string): T[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare(sql).all() as T[];
  } finally {
    db.close();
  }
}

describe('a signed webhook receiver with makeIdempotent on SQLite', () => {
  it('answers 400 to a missing, forged, tampered, stale or malformed signature, and runs nothing', async () => {
    const receiver = await startReceiver();
    const event = eventsOf(0, 1)[0] as WebhookEvent;
    const body = JSON.stringify(event);
    const tampered = JSON.stringify({ ...event, data: { amount: 999_999 } });
    const stale = now() - 600;
    const forged: [string, string, string | undefined][] = [
      ['no header', body, undefined],
      ['another secret', body, sign(body, now(), 'whsec_wrong')],
      ['a body other than the signed one', tampered, sign(body)],
      ['an old delivery, t outside the tolerance', body, sign(body, stale)],
      ['an old signature under a fresh t', body, `t=${now()},v1=${sign(body, stale).split('v1=')[1]}`],
      ['a t in the future', body, sign(body, now() + 600)],
      ['a v1 cut short', body, sign(body).slice(0, -2)],
      ['a v1 that is not hex', body, `t=${now()},v1=${'z'.repeat(64)}`],
      ['no t', body, `v1=${sign(body).split('v1=')[1]}`],
      ['not a signature header at all', body, 'garbage'],
    ];
    for (const [why, sent, signature] of forged) {
      expect((await post(sent, signature)).status, why).toBe(400);
    }
    // Signed correctly but not an event: refused after the signature, before idempo.
    expect((await post('not json', sign('not json'))).status).toBe(400);
    expect((await post('{"type":"no.id"}', sign('{"type":"no.id"}'))).status).toBe(400);
    await kill(receiver);
    expect(read('SELECT * FROM handled_events')).toEqual([]);
    // Nothing was even claimed: no record for any of them.
    expect(read('SELECT key FROM idempo_records')).toEqual([]);
  }, 10_000);

  it('handles every event exactly once through concurrent copies, a crash after the commit and a SIGKILL mid-delivery', async () => {
    const events = eventsOf(0, 24);
    const pids: number[] = [];

    // 1. Three copies of each of 12 events at once. The receiver dies right after evt_3's row
    // commits, before answering: its copies (and those of every event in flight then) are cut.
    const first = await startReceiver({ CRASH_AFTER_COMMIT: 'evt_3' });
    pids.push(first.pid as number);
    const firstExit = exitOf(first);
    const batch1 = Promise.all(
      events.slice(0, 12).flatMap((event) => [deliver(event), deliver(event), deliver(event)]),
    );
    expect((await firstExit).signal).toBe('SIGKILL');
    const second = await startReceiver();
    pids.push(second.pid as number);
    await batch1;

    // 2. The next 12, two copies at once and a third a moment later; the receiver is SIGKILLed
    // while their handlers run (each takes 150 ms), and restarted 300 ms later. The events it held
    // stay claimed until their 2 s lease passes: re-deliveries wait, get 409, and retry until one
    // takes the event over.
    const cutBefore = cutDeliveries;
    const batch2 = Promise.all(
      events.slice(12).flatMap((event) => [deliver(event), deliver(event), sleep(40).then(() => deliver(event))]),
    );
    // Killed once handlers run: their events claimed, no answer sent.
    const records = createSqliteStore({ path: dbPath, sweepInterval: false });
    const inFlight = async () => (await records.list!({ state: 'in_flight' })).records.length;
    let held: number;
    try {
      const giveUpAt = Date.now() + 5_000;
      while ((await inFlight()) === 0 && Date.now() < giveUpAt) await sleep(5);
      await kill(second);
      held = await inFlight();
    } finally {
      await records.close();
    }
    expect(held, 'events the killed receiver held').toBeGreaterThan(0);
    await sleep(300);
    const third = await startReceiver();
    pids.push(third.pid as number);
    await batch2;
    expect(cutDeliveries - cutBefore, 'deliveries cut by the kill or refused while it was down').toBeGreaterThan(0);

    // 3. Every event once more, late, as a provider's retry schedule would.
    for (const event of events) await deliver(event);
    await kill(third);

    const rows = read<{ row: number; event_id: string; amount: number; pid: number }>(
      'SELECT row, event_id, amount, pid FROM handled_events ORDER BY row',
    );
    // Exactly one row per event, with the signed payload (not the tampered one of the first test).
    expect(rows.map((row) => row.event_id).sort()).toEqual(events.map((event) => event.id).sort());
    for (const row of rows) expect(row.amount).toBe(100 * Number(row.event_id.slice(4)));
    // evt_3's row was committed by the process that died before answering; the re-deliveries that
    // followed got that row's result back and wrote nothing.
    expect(rows.find((row) => row.event_id === 'evt_3')?.pid).toBe(pids[0]);
    expect(read('SELECT key FROM idempo_records')).toHaveLength(events.length);

    // Every 2xx names the one row of its event: the same answer to every delivery of an event.
    const acknowledged = answers.filter((answer) => answer.status >= 200 && answer.status < 300);
    const rowOf = new Map(rows.map((row) => [row.event_id, row.row]));
    for (const answer of acknowledged) {
      expect(JSON.parse(answer.body)).toEqual({
        received: true,
        event: answer.event,
        ledgerRow: rowOf.get(answer.event),
      });
    }
    expect(new Set(acknowledged.map((answer) => answer.event))).toEqual(new Set(events.map((event) => event.id)));
    // Anything else a valid delivery got was "busy, retry" (a re-delivery that waited past
    // WAIT_TIMEOUT for an event held by a dead receiver's lease), never an error.
    for (const answer of answers) expect([200, 409], answer.body).toContain(answer.status);
  }, 25_000);
});
