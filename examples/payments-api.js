// The example payments API that `npm start` puts behind the idempo gateway. It is deliberately
// naive: POST /payments charges every time it is called, so only idempo stands between a retry
// and a double charge. POST /signups shows the other technique: an operation made naturally
// idempotent by a unique constraint (here, on the e-mail address).
//
// One case no proxy can settle alone: the gateway re-drives a request whose earlier owner crashed
// or stalled past its lease, and that earlier attempt may have reached this API and charged. The
// gateway marks such a request with `Idempo-Redrive` (and always forwards `Idempotency-Key`), so
// the API keeps a unique index of keys to payments and, on a re-drive of a key it knows, answers
// the payment it already made.
import { randomUUID } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';

/**
 * Starts the payments API.
 * @param {{ port?: number, host?: string, delayMs?: number, stateFile?: string }} [options]
 *   `stateFile` keeps payments and signups across restarts (a JSON file, rewritten on each change),
 *   as a database would: the gateway's SQLite store outlives the process too.
 * @returns {Promise<{ url: string, port: number, close(): Promise<void>, stats(): { payments: number, amountCents: number, signups: number } }>}
 */
export async function startPaymentsApi({ port = 0, host = '127.0.0.1', delayMs = 0, stateFile } = {}) {
  const saved = stateFile ? load(stateFile) : { payments: [], keys: [], signups: [] };
  const payments = new Map(saved.payments.map((p) => [p.id, p]));
  // The unique index Idempotency-Key → payment (in a database: a UNIQUE column on payments).
  const paymentsByKey = new Map(saved.keys.map(([key, id]) => [key, payments.get(id)]));
  const signupsByEmail = new Map(saved.signups.map((a) => [a.email, a]));
  let amountCents = saved.payments.reduce((sum, p) => sum + p.amount, 0);
  const save = () => {
    if (!stateFile) return;
    const state = {
      payments: [...payments.values()],
      keys: [...paymentsByKey].map(([key, payment]) => [key, payment.id]),
      signups: [...signupsByEmail.values()],
    };
    writeFileSync(`${stateFile}.tmp`, JSON.stringify(state));
    renameSync(`${stateFile}.tmp`, stateFile);
  };

  const server = http.createServer(async (req, res) => {
    const send = (status, body, headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (req.method === 'GET' && url.pathname === '/stats') {
        return send(200, { payments: payments.size, amountCents, signups: signupsByEmail.size });
      }
      if (req.method === 'GET' && url.pathname.startsWith('/payments/')) {
        const payment = payments.get(url.pathname.slice('/payments/'.length));
        return payment ? send(200, payment) : send(404, { error: { message: 'no such payment' } });
      }
      if (req.method === 'POST' && url.pathname === '/payments') {
        const body = await readJson(req);
        if (!Number.isInteger(body?.amount) || body.amount <= 0) {
          return send(400, { error: { message: 'amount must be a positive integer number of cents' } });
        }
        const key = req.headers['idempotency-key'];
        // Only a re-drive needs the lookup: every other retry of a key is answered by idempo from
        // its store and never reaches this API. A re-drive is the one repeat idempo cannot rule
        // out, since it cannot know whether the earlier attempt got here before its owner died.
        // (The gateway drops any Idempo-Redrive a client sends, so clients cannot force this path.)
        if (key !== undefined && req.headers['idempo-redrive'] !== undefined) {
          const existing = paymentsByKey.get(key);
          if (existing) return send(201, existing, { location: `/payments/${existing.id}` });
        }
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        const payment = {
          id: `pay_${randomUUID()}`,
          amount: body.amount,
          currency: body.currency ?? 'eur',
          status: 'succeeded',
        };
        payments.set(payment.id, payment);
        if (key !== undefined) paymentsByKey.set(key, payment);
        amountCents += payment.amount;
        save();
        return send(201, payment, { location: `/payments/${payment.id}` });
      }
      if (req.method === 'POST' && url.pathname === '/signups') {
        const body = await readJson(req);
        const email = String(body?.email ?? '').toLowerCase();
        if (!email.includes('@')) return send(400, { error: { message: 'email is required' } });
        // The unique constraint: a second signup with the same e-mail returns the first account.
        const existing = signupsByEmail.get(email);
        if (existing) return send(200, existing);
        const account = { id: `acct_${randomUUID()}`, email };
        signupsByEmail.set(email, account);
        save();
        return send(201, account);
      }
      send(404, { error: { message: 'not found' } });
    } catch (error) {
      send(400, { error: { message: error instanceof SyntaxError ? 'invalid JSON body' : String(error) } });
    }
  });

  await new Promise((resolve) => server.listen(port, host, resolve));
  const address = server.address();
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
    stats: () => ({ payments: payments.size, amountCents, signups: signupsByEmail.size }),
  };
}

function load(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    if (error.code === 'ENOENT') return { payments: [], keys: [], signups: [] };
    throw new Error(`${file}: cannot read the example API's state (${error.message}); delete it to start afresh.`);
  }
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}
