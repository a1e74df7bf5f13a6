// `npm run demo`: why a retry needs an Idempotency-Key.
//
// The same N payments go, twice, through the same chain on loopback:
//
//   client ──▶ lossy proxy ──▶ idempo gateway ──▶ payments API
//
// The lossy proxy lets a seeded share of payments run and then hangs up before the client gets the
// answer. Run 1 is plain fetch with naive retries: it sends no key, the gateway passes it through,
// and every retry charges again. Run 2 is the idempo client: one key per payment, the gateway runs
// the first attempt and replays its stored answer to the retries. Each run gets a fresh API,
// gateway and proxy with the same seed, so both face the same drops.
//
// Options: --operations N (default 100), --drop-rate R (0.3), --seed S (7), --retries K (5).
import { parseArgs } from 'node:util';
import { createIdempotentFetch } from '../../dist/client/index.js';
import { startGateway } from '../../dist/gateway/index.js';
import { startPaymentsApi } from '../payments-api.js';
import { startLossyProxy } from './lossy-proxy.js';

const USAGE = `Usage: npm run demo -- [options]

  --operations N   payments sent in each run (default 100)
  --drop-rate R    share of answers the network drops, from 0 to 1 (default 0.3)
  --seed S         seed of the drops, an integer (default 7)
  --retries K      retries per payment (default 5)
  -h, --help       this help`;

/** Stops with one line and the usage on a bad option. */
function fail(message) {
  console.error(`demo: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// A negative number after an option (`--drop-rate -0.1`) is its value, to be refused with the
// option's own range below: parseArgs (Node 20) would call it an ambiguous option instead.
const args = [];
for (const arg of process.argv.slice(2)) {
  const last = args.length - 1;
  if (/^-\.?\d/.test(arg) && /^--(operations|drop-rate|seed|retries)$/.test(args[last] ?? '')) args[last] += `=${arg}`;
  else args.push(arg);
}

let values;
try {
  ({ values } = parseArgs({
    args,
    options: {
      operations: { type: 'string', default: '100' },
      'drop-rate': { type: 'string', default: '0.3' },
      seed: { type: 'string', default: '7' },
      retries: { type: 'string', default: '5' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (error) {
  fail(error.message);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

/** A number option within bounds, or a one-line refusal. */
function numberOption(name, { min, max, integer }) {
  const raw = values[name];
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
    fail(`--${name} ${JSON.stringify(raw)}: expected ${integer ? 'an integer' : 'a number'} from ${min} to ${max}.`);
  }
  return n;
}

const OPERATIONS = numberOption('operations', { min: 1, max: 100_000, integer: true });
const DROP_RATE = numberOption('drop-rate', { min: 0, max: 1, integer: false });
const SEED = numberOption('seed', { min: 0, max: 2 ** 31 - 1, integer: true });
const RETRIES = numberOption('retries', { min: 0, max: 100, integer: true });
const RETRY_DELAY_MS = 5;

// Bounded: whatever happens, the demo ends well inside a minute.
const watchdog = setTimeout(() => {
  console.error('demo: still running after 45 s, giving up');
  process.exit(1);
}, 45_000);
watchdog.unref();

/** The amount of payment `i`, in cents: distinct, so a double charge shows up in the total. */
const amountOf = (i) => 1_000 + ((i * 737) % 9_000);

/** Plain fetch, retried on network errors the way most code does it: same request, no key. */
async function naiveFetch(url, init) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fetch(url, init);
    } catch (error) {
      if (attempt >= RETRIES) throw error;
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS * 2 ** attempt));
    }
  }
}

const idempotentFetch = createIdempotentFetch({
  retry: { limit: RETRIES, delay: (n) => RETRY_DELAY_MS * 2 ** (n - 1) },
});

async function run(send) {
  const api = await startPaymentsApi();
  const gateway = await startGateway({ upstream: api.url, port: 0, store: 'memory:', logger: false });
  const proxy = await startLossyProxy({ target: gateway.url, dropRate: DROP_RATE, seed: SEED });
  let expectedCents = 0;
  let failed = 0;
  let replayed = 0;
  try {
    // One after another, so the proxy's seeded drops hit the same attempts on every run.
    for (let i = 0; i < OPERATIONS; i++) {
      const amount = amountOf(i);
      expectedCents += amount;
      try {
        const response = await send(`${proxy.url}/payments`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ amount, currency: 'eur' }),
        });
        if (response.headers.get('idempotent-replayed') === 'true') replayed++;
        await response.arrayBuffer();
        if (!response.ok) failed++;
      } catch {
        failed++;
      }
    }
    const stats = api.stats();
    // Drops happen only after the API has answered, so every payment ran at least once and
    // anything beyond one execution per payment is a duplicate.
    return {
      executions: stats.payments,
      duplicates: stats.payments - OPERATIONS,
      doubleChargedCents: stats.amountCents - expectedCents,
      failed,
      replayed,
      dropped: proxy.stats().droppedResponses,
    };
  } finally {
    await proxy.close();
    await gateway.close();
    await api.close();
  }
}

const started = Date.now();
const naive = await run(naiveFetch);
const idempo = await run(idempotentFetch);

const euros = (cents) => `€${(cents / 100).toFixed(2)}`;
const rows = [
  ['client', 'operations', 'executions on server', 'duplicates', 'amount charged twice', 'failed calls'],
  [
    'plain fetch + naive retries',
    OPERATIONS,
    naive.executions,
    naive.duplicates,
    euros(naive.doubleChargedCents),
    naive.failed,
  ],
  ['idempo client', OPERATIONS, idempo.executions, idempo.duplicates, euros(idempo.doubleChargedCents), idempo.failed],
].map((row) => row.map(String));
const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
const line = (row) =>
  `| ${row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join(' | ')} |`;

console.log(
  `\n${OPERATIONS} payments through a network that drops ${Math.round(DROP_RATE * 100)}% of responses` +
    ` after the server has done the work (seed ${SEED}, up to ${RETRIES} retries)\n`,
);
console.log(line(rows[0]));
console.log(`|${widths.map((w, c) => (c === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
for (const row of rows.slice(1)) console.log(line(row));
console.log(
  `\nResponses lost on the way back: ${naive.dropped} (naive run), ${idempo.dropped} (idempo run).` +
    `\nThe idempo client got ${idempo.replayed} of its answers replayed by the gateway instead of charging again.` +
    `\nDone in ${((Date.now() - started) / 1000).toFixed(1)} s.`,
);
