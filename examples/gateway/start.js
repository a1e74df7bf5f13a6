// `npm start`: the example payments API on :3000 and the idempo gateway on :8080 in front of it,
// on the embedded SQLite store (./idempo.db). Try:
//   curl -i -X POST localhost:8080/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
//
// The gateway's SQLite file outlives the process, so the API keeps its payments beside it
// (./payments.json, or IDEMPO_EXAMPLE_STATE): a payment replayed after a restart is still one the
// API knows. With IDEMPO_STORE=memory: both start empty.
import { startGateway, stopOnSignals } from '../../dist/gateway/index.js';
import { startPaymentsApi } from '../payments-api.js';

const store = process.env.IDEMPO_STORE ?? 'sqlite:./idempo.db';
const stateFile = store.startsWith('memory:') ? undefined : (process.env.IDEMPO_EXAMPLE_STATE ?? './payments.json');
const api = await startPaymentsApi({ port: Number(process.env.API_PORT ?? 3000), stateFile });
const gateway = await startGateway({ upstream: api.url, port: Number(process.env.PORT ?? 8080), store });
console.log(
  `payments API at ${api.url}; idempo gateway at ${gateway.url} (try POST ${gateway.url}/payments with an Idempotency-Key)`,
);

// SIGTERM, SIGINT, or npm going away (npm's SIGTERM stops its shell, not this process): drain, then exit.
stopOnSignals(async () => {
  await gateway.close();
  await api.close();
});
