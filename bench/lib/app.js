/**
 * What every benchmarked server does, whatever its framework or idempotency layer: one route,
 * `POST /payments`, that reads a small JSON body and answers `201` with a small JSON payment.
 * The handler-run counter lets the harness check that a replay workload really replayed (no
 * handler runs) and that a fresh-key workload really executed (one run per request).
 */

export const ROUTE = '/payments';

/** The request body every load generator sends. */
export const REQUEST_BODY = JSON.stringify({ amount: 1999, currency: 'usd', customer: 'cus_8f2k3', capture: true });

/** The response the benches that drive the engine or a store directly store: what `charge` answers. */
export const STORED_RESPONSE = {
  status: 201,
  headers: [
    ['content-type', 'application/json; charset=utf-8'],
    ['content-length', '62'],
  ],
  body: Buffer.from('{"id":"pay_1","amount":1999,"currency":"usd","status":"succeeded"}'),
};

export const counters = { handlerRuns: 0, redisCommands: 0 };

let sequence = 0;

/** The business logic: "charge" and describe the payment. Counts its runs. */
export function charge(body) {
  counters.handlerRuns++;
  sequence++;
  return {
    id: `pay_${sequence.toString(36)}`,
    amount: body?.amount ?? 0,
    currency: body?.currency ?? 'usd',
    status: 'succeeded',
  };
}

/** The table the insert-one-row handler writes its payments to. */
export const PAYMENTS_TABLE = 'ibench_payments';

/** The business logic with its effect in PostgreSQL: one INSERT of the payment, then the answer. */
export async function chargeIntoTable(queryable, body) {
  const payment = charge(body);
  await queryable.query(`INSERT INTO ${PAYMENTS_TABLE} (id, amount, currency) VALUES ($1, $2, $3)`, [
    `${process.pid}_${payment.id}`,
    payment.amount,
    payment.currency,
  ]);
  return payment;
}

/**
 * The same INSERT between `BEGIN` and `COMMIT` on a client of the pool: what an application's own
 * transaction costs on node-postgres, which sends each statement and waits for its reply.
 */
export async function chargeInTransaction(pool, body) {
  const client = await pool.connect();
  let broken;
  try {
    await client.query('BEGIN');
    const payment = await chargeIntoTable(client, body);
    await client.query('COMMIT');
    return payment;
  } catch (error) {
    // A connection whose ROLLBACK failed is in an unknown state: destroyed, not pooled again.
    await client.query('ROLLBACK').catch((rollbackError) => {
      broken = rollbackError;
    });
    throw error;
  } finally {
    client.release(broken);
  }
}

/** Reads a node:http request body as JSON (for the node:http and proxy-upstream servers). */
export function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      try {
        resolve(chunks.length === 0 ? null : JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (error) {
        reject(error);
      }
    });
    req.on('error', reject);
  });
}

/** A plain node:http listener implementing the route. */
export async function nodeListener(req, res) {
  if (req.method !== 'POST' || req.url !== ROUTE) {
    res.writeHead(404).end();
    return;
  }
  const body = await readJson(req);
  const payload = JSON.stringify(charge(body));
  res.writeHead(201, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}
