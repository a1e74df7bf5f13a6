// `npm start`: the example payments API on :3000 and the idempo gateway on :8080 in front of it,
// on the embedded SQLite store (./idempo.db). Try:
//   curl -i -X POST localhost:8080/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import { startGateway } from '../dist/gateway/index.js';
import { startPaymentsApi } from './payments-api.js';

const api = await startPaymentsApi({ port: Number(process.env.API_PORT ?? 3000) });
const gateway = await startGateway({
  upstream: api.url,
  port: Number(process.env.PORT ?? 8080),
  store: process.env.IDEMPO_STORE ?? 'sqlite:./idempo.db',
});
console.log(
  `payments API at ${api.url}; idempo gateway at ${gateway.url} (try POST ${gateway.url}/payments with an Idempotency-Key)`,
);

const stop = async () => {
  await gateway.close();
  await api.close();
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
