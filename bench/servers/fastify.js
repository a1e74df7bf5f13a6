/**
 * Fastify: the bare route; the same route with idempo's Fastify plugin on each store; and the
 * peers wired the way their READMEs show: @node-idempotency/core called from the route
 * (onRequest before the business logic, onResponse after it), and Powertools' `makeIdempotent`
 * wrapping the business logic with its Redis (cache) persistence layer.
 */
import Fastify from 'fastify';
import { charge, chargeInTransaction, chargeIntoTable, ROUTE } from '../lib/app.js';
import { KEY_PREFIX, PG_URL, REDIS_URL } from '../lib/env.js';
import { idleEngine } from '../lib/idle-engine.js';
import { openIdempoStore } from '../lib/stores.js';

export async function start({ variant, store: storeName, runId, autoPipelining, redisClient, observe, handler }) {
  const app = Fastify({ logger: false });
  let after = async () => {};
  // The insert-one-row family: the handler writes its payment on a pool of 10 connections, which
  // idempo's PostgreSQL store shares, as one application would.
  let pgPool;
  if (handler?.startsWith('insert-row')) {
    const { default: pg } = await import('pg');
    pgPool = new pg.Pool({ connectionString: PG_URL, max: 10 });
  }
  const closePool = async () => pgPool?.end();
  const business = !pgPool
    ? async (body) => charge(body)
    : handler === 'insert-row-in-tx'
      ? (body) => chargeInTransaction(pgPool, body)
      : (body) => chargeIntoTable(pgPool, body);
  // The bare route, which the diagnostic layers keep as it is.
  const bareRoute = async (req, reply) => reply.code(201).send(await business(req.body));

  switch (variant) {
    case 'bare':
      app.post(ROUTE, bareRoute);
      after = closePool;
      break;

    case 'idempo': {
      const { createIdempotency } = await import('idempo');
      const { default: idempotency } = await import('idempo/fastify');
      const opened = await openIdempoStore(storeName, runId, { autoPipelining, redisClient, pgPool });
      after = async () => {
        await opened.close();
        await closePool();
      };
      const observers = observe ? await observersFor(observe) : [];
      await app.register(idempotency, { idempotency: createIdempotency({ store: opened.store, observe: observers }) });
      // insert-row-tx: the row and a step with its result commit in one transaction (ctx.transaction).
      const effect =
        handler === 'insert-row-tx'
          ? (req) => req.idempotency.transaction((client) => chargeIntoTable(client, req.body))
          : (req) => business(req.body);
      app.post(ROUTE, async (req, reply) => reply.code(201).send(await effect(req)));
      break;
    }

    // Diagnostics (cases.js): what the plugin costs over an engine that does nothing, and what
    // Fastify's hook runners cost by themselves, with a preParsing and a preHandler hook that do
    // nothing but call on, as the plugin's do.
    case 'adapter-only': {
      const { default: idempotency } = await import('idempo/fastify');
      await app.register(idempotency, { idempotency: idleEngine() });
      app.post(ROUTE, bareRoute);
      break;
    }

    case 'hooks-only':
      app.post(
        ROUTE,
        {
          preParsing: (_req, _reply, payload, done) => done(null, payload),
          preHandler: (_req, _reply, done) => done(),
        },
        bareRoute,
      );
      break;

    case 'node-idempotency': {
      const { Idempotency } = await import('@node-idempotency/core');
      let storage;
      if (storeName === 'memory') {
        const { MemoryStorageAdapter } = await import('@node-idempotency/storage-adapter-memory');
        storage = new MemoryStorageAdapter();
      } else {
        const { RedisStorageAdapter } = await import('@node-idempotency/storage-adapter-redis');
        storage = new RedisStorageAdapter({ url: REDIS_URL });
        await storage.connect();
        after = () => storage.disconnect();
      }
      const idem = new Idempotency(storage, { cacheKeyPrefix: `${KEY_PREFIX}nic` });
      app.post(ROUTE, async (req, reply) => {
        const request = { method: req.method, headers: req.headers, body: req.body, path: req.url };
        try {
          const cached = await idem.onRequest(request);
          if (cached) return reply.code(cached.additional.status).send(cached.body);
        } catch (error) {
          return reply.code(peerErrorStatus(error)).send({ error: error.message });
        }
        const body = charge(req.body);
        await idem.onResponse(request, { body, additional: { status: 201 } });
        return reply.code(201).send(body);
      });
      break;
    }

    case 'powertools': {
      const { makeIdempotent, IdempotencyConfig } = await import('@aws-lambda-powertools/idempotency');
      const { CachePersistenceLayer } = await import('@aws-lambda-powertools/idempotency/cache');
      const { createClient } = await import('@redis/client');
      const client = createClient({ url: REDIS_URL });
      await client.connect();
      after = () => client.quit();
      const persistenceStore = new CachePersistenceLayer({ client });
      // Key only, no payloadValidationJmesPath: in 2.35.0 the cache layer drops the validation hash
      // when it completes a record, so with validation on every replay fails with a 422.
      const config = new IdempotencyConfig({ eventKeyJmesPath: 'key' });
      // As in Lambda, where the context bounds the in-progress lock; without one it warns on every call.
      config.registerLambdaContext({ getRemainingTimeInMillis: () => 60_000 });
      const chargeIdempotently = makeIdempotent(async (event) => charge(event.body), {
        persistenceStore,
        keyPrefix: `${KEY_PREFIX}powertools`,
        config,
      });
      app.post(ROUTE, async (req, reply) => {
        try {
          const body = await chargeIdempotently({ key: req.headers['idempotency-key'], body: req.body });
          return reply.code(201).send(body);
        } catch (error) {
          return reply.code(peerErrorStatus(error)).send({ error: error.message });
        }
      });
      break;
    }

    default:
      throw new Error(`fastify: unknown variant ${variant}`);
  }

  await app.listen({ port: 0, host: '127.0.0.1' });
  app.server.keepAliveTimeout = 60_000;
  return {
    port: app.server.address().port,
    async close() {
      await app.close();
      await after();
    },
  };
}

/** Conflict and mismatch errors of either peer, by name; anything else is a 500. */
export function peerErrorStatus(error) {
  const text = `${error?.name ?? ''} ${error?.code ?? ''} ${error?.message ?? ''}`;
  if (/progress|outstanding/i.test(text)) return 409;
  if (/validation|fingerprint|already used/i.test(text)) return 422;
  return 500;
}

/** Observers for the cost-of-observing cases: metrics alone, or metrics, key usage and traces. */
async function observersFor(observe) {
  const { Registry } = await import('prom-client');
  const { idempoMetrics } = await import('idempo/metrics');
  const registry = new Registry();
  if (observe === 'metrics') return [idempoMetrics({ registry, storeName: 'memory' })];
  const { createKeyUsage } = await import('idempo/usage');
  const { idempoTracing } = await import('idempo/tracing');
  const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  const dropping = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} };
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropping)] });
  const usage = createKeyUsage();
  return [
    idempoMetrics({ registry, storeName: 'memory', usage }),
    usage,
    idempoTracing({ tracer: provider.getTracer('bench') }),
  ];
}
