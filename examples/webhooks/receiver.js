// A webhook receiver that handles each event once, although the sender delivers at least once.
//   npm run build && WEBHOOK_SECRET=whsec_test node examples/webhooks/receiver.js
//   body='{"id":"evt_1","type":"invoice.paid","data":{"amount":1200}}'; t=$(date +%s)
//   v1=$(printf '%s' "$t.$body" | openssl dgst -sha256 -hmac whsec_test -r | cut -d' ' -f1)
//   curl -i localhost:3000/webhooks -H "Webhook-Signature: t=$t,v1=$v1" -d "$body"
// Send it again (re-signed or not, within the tolerance): 200 with the first answer, and still one
// row in handled_events. A sender re-delivers whatever it saw no 2xx for (a timeout, a crash of
// this process after the work but before the answer), so the event id, not the delivery, is the key.
// Env: WEBHOOK_SECRET (required), IDEMPO_DB (./webhooks.db: idempo's records and the ledger),
// PORT (3000), WEBHOOK_TOLERANCE (300 s), LEASE (30s), WAIT_TIMEOUT (5s); for the test only:
// HANDLE_DELAY_MS (a slow handler), CRASH_AFTER_COMMIT (an event id: die once its row is committed,
// before answering).
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { IdempotencyConflictError, IdempotencyError, IdempotencyResponseNotKeptError } from 'idempo';
import { makeIdempotent } from 'idempo/functions';
import { createSqliteStore } from 'idempo/sqlite';

const secret = process.env.WEBHOOK_SECRET;
if (!secret) {
  console.error('WEBHOOK_SECRET is required: the shared secret the sender signs its deliveries with');
  process.exit(1);
}
const path = process.env.IDEMPO_DB ?? './webhooks.db';
const toleranceSeconds = Number(process.env.WEBHOOK_TOLERANCE ?? 300);
const handleDelayMs = Number(process.env.HANDLE_DELAY_MS ?? 0);
const crashAfterCommit = process.env.CRASH_AFTER_COMMIT;
// Events are small; a cap keeps an unauthenticated caller from making us buffer without end
// before the signature can even be checked.
const MAX_BODY_BYTES = 1024 * 1024;

// The ledger is in idempo's own file, written through ctx.transaction: the event's row and the
// step that records it commit together, so a crash after the row is written (before idempo stored
// the result) cannot lead to a second row when the sender re-delivers.
const db = new Database(path);
const store = createSqliteStore({ path, database: db });
// No UNIQUE on event_id, on purpose: the row count is what shows each event ran once.
db.exec(`CREATE TABLE IF NOT EXISTS handled_events (
  row INTEGER PRIMARY KEY,
  event_id TEXT NOT NULL,
  type TEXT,
  amount INTEGER,
  pid INTEGER NOT NULL,
  handled_at INTEGER NOT NULL
)`);
const insertRow = db.prepare(
  'INSERT INTO handled_events (event_id, type, amount, pid, handled_at) VALUES (?, ?, ?, ?, ?)',
);

async function handleEvent(event, ctx) {
  // Stands for work before the write (a lookup, a call out) that keeps an event in flight long
  // enough for a re-delivery to arrive meanwhile.
  if (handleDelayMs > 0) await sleep(handleDelayMs);
  let wrote = false;
  // Synchronous: better-sqlite3 transactions cannot span an await.
  const result = await ctx.transaction('ledger', () => {
    wrote = true;
    const { lastInsertRowid } = insertRow.run(
      event.id,
      event.type ?? null,
      event.data?.amount ?? null,
      process.pid,
      Date.now(),
    );
    return { event: event.id, ledgerRow: Number(lastInsertRowid) };
  });
  // `wrote`: a run that took the event over after a crash gets the committed result back without
  // writing, and must not die again.
  if (wrote && event.id === crashAfterCommit) process.kill(process.pid, 'SIGKILL');
  return result;
}

const handleOnce = makeIdempotent(handleEvent, {
  store,
  name: 'webhook-event',
  // The provider's event id is the same on every delivery of the event; a delivery id is not.
  key: (event) => event.id,
  // A re-delivery that comes while the first delivery is being handled waits for its result, up
  // to WAIT_TIMEOUT; past it, 409 tells the sender to try again later.
  concurrent: 'wait',
  waitTimeout: process.env.WAIT_TIMEOUT ?? '5s',
  // Renewed while the handler runs, so it can be short: it is how long an event stays held by a
  // receiver that died handling it before a re-delivery may take it over.
  lease: process.env.LEASE ?? '30s',
  // Senders re-deliver for days (Stripe for up to three): a record gone before the last retry
  // would let that retry handle the event again.
  ttl: '7d',
});

/** Why the delivery is refused, or undefined when its signature holds. */
function verifySignature(header, raw, nowSeconds) {
  if (typeof header !== 'string') return 'missing Webhook-Signature';
  let timestamp;
  const signatures = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (name === 't') timestamp = value;
    // More than one v1 when the sender signs with an old and a new secret while rotating them.
    else if (name === 'v1') signatures.push(value);
  }
  if (timestamp === undefined || !/^\d{1,12}$/.test(timestamp)) return 'Webhook-Signature has no valid t=';
  // t is part of what is signed, so a captured delivery cannot be given a fresh t: outside the
  // window it is refused, inside it the idempotency key makes a replay harmless.
  if (Math.abs(nowSeconds - Number(timestamp)) > toleranceSeconds) return 'timestamp outside the tolerance';
  const expected = createHmac('sha256', secret).update(`${timestamp}.`).update(raw).digest();
  const matches = signatures.some(
    // timingSafeEqual throws on a length difference, and a length is no secret: check it first.
    // Buffer.from(…, 'hex') would silently drop a bad digit, hence the pattern.
    (hex) => /^[0-9a-f]{64}$/i.test(hex) && timingSafeEqual(Buffer.from(hex, 'hex'), expected),
  );
  return matches ? undefined : 'signature does not match';
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return null;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const send = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
};

const server = http.createServer(async (req, res) => {
  if (req.method !== 'POST' || req.url !== '/webhooks') return send(res, 404, { error: 'not found' });
  const raw = await readBody(req);
  if (raw === null) return send(res, 413, { error: 'body too large' }, { connection: 'close' });
  // Over the raw bytes, before parsing: a re-serialised body would not be what was signed, and
  // nothing, not even idempo's claim, happens for a delivery we cannot trust.
  const refused = verifySignature(req.headers['webhook-signature'], raw, Math.floor(Date.now() / 1000));
  if (refused) return send(res, 400, { error: refused });
  let event;
  try {
    event = JSON.parse(raw.toString('utf8'));
  } catch {
    return send(res, 400, { error: 'body is not JSON' });
  }
  if (typeof event?.id !== 'string' || event.id === '') return send(res, 400, { error: 'event has no id' });
  try {
    send(res, 200, { received: true, ...(await handleOnce(event)) });
  } catch (error) {
    // It ran; only its result was not kept. Another answer would only make the sender re-deliver.
    if (error instanceof IdempotencyResponseNotKeptError) return send(res, 200, { received: true, event: event.id });
    if (error instanceof IdempotencyConflictError) {
      const seconds = Math.max(1, Math.ceil((error.retryAfterMs ?? 1_000) / 1_000));
      return send(res, 409, { error: error.message }, { 'retry-after': String(seconds) });
    }
    // The rest of idempo's refusals carry their status (422: this id came with another payload,
    // 503: the store is down, 409: this run lost its lease to a newer one).
    if (error instanceof IdempotencyError) return send(res, error.status, { error: error.message });
    // The key was released: the sender's next delivery runs the handler again.
    console.error(`handling ${event.id} failed:`, error);
    send(res, 500, { error: 'handler failed' });
  }
});

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`webhook receiver listening on http://127.0.0.1:${server.address().port}/webhooks`);
});

process.on('SIGTERM', () => {
  server.close(async () => {
    await store.close();
    db.close();
  });
  server.closeIdleConnections();
});
