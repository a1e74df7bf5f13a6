/**
 * The NestJS adapter's own surface, on both platforms: global registration with an opt-out,
 * routes that send their own response, interceptors that reshape responses, forRootAsync.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import {
  type CallHandler,
  Controller,
  type ExecutionContext,
  Injectable,
  Module,
  type NestInterceptor,
  Post,
  Res,
} from '@nestjs/common';
import { APP_INTERCEPTOR, NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { map } from 'rxjs';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IDEMPOTENCY, IdempotencyInterceptor, IdempotencyModule, Idempotent } from '../../src/adapters/nestjs.js';
import type { Idempotency } from '../../src/engine/types.js';
import { createMemoryStore } from '../../src/stores/memory.js';

const CONFIG = Symbol('Config');
const runs = new Map<string, number>();
const ran = (name: string) => {
  const n = (runs.get(name) ?? 0) + 1;
  runs.set(name, n);
  return n;
};

/** Wraps every handler value, the way many Nest apps shape their responses. */
@Injectable()
class EnvelopeInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler) {
    return next.handle().pipe(map((data: unknown) => ({ data })));
  }
}

@Controller()
class ThingsController {
  @Post('marked')
  @Idempotent()
  marked() {
    return { n: ran('marked') };
  }

  @Post('unmarked')
  unmarked() {
    return { n: ran('unmarked') };
  }

  @Post('opted-out')
  @Idempotent(false)
  optedOut() {
    return { n: ran('opted-out') };
  }

  @Post('own-response')
  @Idempotent()
  ownResponse(@Res() res: ServerResponse | { raw: ServerResponse }) {
    const raw = 'raw' in res ? res.raw : res;
    raw.writeHead(202, { 'content-type': 'text/plain', 'x-own': 'yes' });
    raw.end(`own ${ran('own-response')}`);
  }
}

@Module({
  providers: [{ provide: CONFIG, useValue: { waitTimeout: '2s' } }],
  exports: [CONFIG],
})
class ConfigModule {}

async function start(platform: 'express' | 'fastify', global: boolean) {
  @Module({
    imports: [
      IdempotencyModule.forRootAsync({
        imports: [ConfigModule],
        inject: [CONFIG],
        useFactory: async (config: { waitTimeout: '2s' }) => ({ store: createMemoryStore(), ...config }),
      }),
    ],
    controllers: [ThingsController],
    providers: [
      { provide: APP_INTERCEPTOR, useClass: EnvelopeInterceptor },
      ...(global ? [{ provide: APP_INTERCEPTOR, useExisting: IdempotencyInterceptor }] : []),
    ],
  })
  class AppModule {}
  const nest = await NestFactory.create(
    AppModule,
    platform === 'express' ? new ExpressAdapter() : new FastifyAdapter(),
    {
      logger: false,
    },
  );
  await nest.listen(0, '127.0.0.1');
  const { port } = nest.getHttpServer().address() as { port: number };
  return { nest, url: `http://127.0.0.1:${port}` };
}

async function post(url: string, key: string) {
  const response = await request(url, { method: 'POST', headers: { 'idempotency-key': key } });
  const text = await response.body.text();
  return { status: response.statusCode, headers: response.headers, text };
}

describe.each(['express', 'fastify'] as const)('nestjs on %s', (platform) => {
  let marked: Awaited<ReturnType<typeof start>>;
  let global: Awaited<ReturnType<typeof start>>;
  beforeAll(async () => {
    marked = await start(platform, false);
    global = await start(platform, true);
  });
  afterAll(async () => {
    await marked.nest.close();
    await global.nest.close();
  });

  it('builds the engine with forRootAsync from injected configuration', () => {
    const engine = marked.nest.get<Idempotency>(IDEMPOTENCY);
    expect(typeof engine.begin).toBe('function');
  });

  it('replays exactly what left the server, though an outer interceptor reshapes values', async () => {
    const key = randomUUID();
    const first = await post(`${marked.url}/marked`, key);
    const replay = await post(`${marked.url}/marked`, key);
    expect(first.status).toBe(201);
    expect(JSON.parse(first.text)).toEqual({ data: { n: expect.any(Number) } });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.text).toBe(first.text);
    expect(replay.headers['content-type']).toBe(first.headers['content-type']);
  });

  it('leaves unmarked routes alone unless the interceptor is global', async () => {
    const key = randomUUID();
    await post(`${marked.url}/unmarked`, key);
    expect((await post(`${marked.url}/unmarked`, key)).headers['idempotent-replayed']).toBeUndefined();
    await post(`${global.url}/unmarked`, key);
    expect((await post(`${global.url}/unmarked`, key)).headers['idempotent-replayed']).toBe('true');
  });

  it('leaves a route marked @Idempotent(false) alone under the global interceptor', async () => {
    const key = randomUUID();
    await post(`${global.url}/opted-out`, key);
    expect((await post(`${global.url}/opted-out`, key)).headers['idempotent-replayed']).toBeUndefined();
  });

  it('runs once on a route that takes both the global interceptor and @Idempotent()', async () => {
    const key = randomUUID();
    const first = await post(`${global.url}/marked`, key);
    expect(first.status).toBe(201);
    expect((await post(`${global.url}/marked`, key)).text).toBe(first.text);
  });

  it('replays a route that sends its own response through @Res()', async () => {
    const key = randomUUID();
    const first = await post(`${marked.url}/own-response`, key);
    const replay = await post(`${marked.url}/own-response`, key);
    expect(first.status).toBe(202);
    expect(replay.status).toBe(202);
    expect(replay.text).toBe(first.text);
    expect(replay.headers['x-own']).toBe('yes');
    expect(replay.headers['idempotent-replayed']).toBe('true');
  });
});
