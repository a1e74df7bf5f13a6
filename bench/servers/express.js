/**
 * Express: the bare route behind `express.json()`; the same with idempo's Express middleware on
 * each store; and express-idempotency (its in-memory adapter and its Redis adapter) mounted the
 * way its README shows, with the route checking `isHit()` so a replay does not run the charge.
 */
import { createServer } from 'node:http';
import express from 'express';
import { charge, ROUTE } from '../lib/app.js';
import { REDIS_URL } from '../lib/env.js';
import { openIdempoStore } from '../lib/stores.js';
import { listen } from './listen.js';

export async function start({ variant, store: storeName, runId }) {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json());
  let after = async () => {};

  switch (variant) {
    case 'bare':
      app.post(ROUTE, (req, res) => res.status(201).json(charge(req.body)));
      break;

    case 'idempo': {
      const { createIdempotency } = await import('idempo');
      const { idempotency } = await import('idempo/express');
      const opened = await openIdempoStore(storeName, runId);
      after = opened.close;
      app.use(idempotency({ idempotency: createIdempotency({ store: opened.store }) }));
      app.post(ROUTE, (req, res) => res.status(201).json(charge(req.body)));
      break;
    }

    case 'express-idempotency': {
      const { default: expressIdempotency } = await import('express-idempotency');
      let dataAdapter;
      if (storeName === 'redis') {
        // A CommonJS module whose class is its `default` export.
        const { default: adapterModule } = await import('express-idempotency-redis-adapter');
        dataAdapter = new adapterModule.default({ connectionConfig: { url: REDIS_URL } });
        await dataAdapter.connect();
        after = () => dataAdapter.disconnect();
      }
      app.use(expressIdempotency.idempotency(dataAdapter ? { dataAdapter } : {}));
      const service = expressIdempotency.getSharedIdempotencyService();
      app.post(ROUTE, (req, res) => {
        if (service.isHit(req)) return;
        res.status(201).json(charge(req.body));
      });
      break;
    }

    default:
      throw new Error(`express: unknown variant ${variant}`);
  }

  return listen(createServer(app), after);
}
