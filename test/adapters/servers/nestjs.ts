import 'reflect-metadata';
import { Readable } from 'node:stream';
import {
  Body,
  Controller,
  Get,
  Header,
  Headers,
  HttpCode,
  Inject,
  Module,
  Post,
  Res,
  StreamableFile,
} from '@nestjs/common';
import { APP_INTERCEPTOR, NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { IdempotencyCtx, IdempotencyInterceptor, IdempotencyModule, Idempotent } from '../../../src/adapters/nestjs.js';
import type { IdempotencyContext } from '../../../src/engine/types.js';
import { type ServerFactory, STREAM_CHUNKS, sleep, type TestApp } from './app.js';

const TEST_APP = Symbol('TestApp');

/** Sets a status on either platform's response (Express `status()`, Fastify `code()`). */
type AnyResponse = { status?: (code: number) => unknown; code?: (code: number) => unknown };
function setStatus(res: AnyResponse, status: number): void {
  if (typeof res.code === 'function') res.code(status);
  else res.status?.(status);
}

function controllerFor(routes: 'decorator' | 'global') {
  @Controller()
  class OrdersController {
    constructor(@Inject(TEST_APP) private readonly app: TestApp) {}

    @Get('orders')
    @Header('x-custom', 'orders')
    list(@Headers('idempotency-key') key: string | undefined, @IdempotencyCtx() ctx: IdempotencyContext) {
      return { n: this.app.count('orders', key), key: ctx.key, body: null };
    }

    @Post('orders')
    @Header('x-custom', 'orders')
    create(
      @Headers('idempotency-key') key: string | undefined,
      @Body() body: unknown,
      @IdempotencyCtx() ctx: IdempotencyContext,
    ) {
      return { n: this.app.count('orders', key), key: ctx.key, body: body ?? null };
    }

    @Post('slow')
    async slow(@Headers('idempotency-key') key: string | undefined) {
      const n = this.app.count('slow', key);
      await this.app.gate();
      return { n };
    }

    @Post('first-held')
    async firstHeld(@Headers('idempotency-key') key: string | undefined) {
      const n = this.app.count('first-held', key);
      if (n === 1) await this.app.gate();
      return { n };
    }

    @Post('flaky')
    flaky(@Headers('idempotency-key') key: string | undefined) {
      const n = this.app.count('flaky', key);
      if (n % 2 === 1) throw new Error('flaky handler failed');
      return { n };
    }

    @Post('unavailable')
    unavailable(@Headers('idempotency-key') key: string | undefined, @Res({ passthrough: true }) res: AnyResponse) {
      const n = this.app.count('unavailable', key);
      setStatus(res, n % 2 === 1 ? 503 : 201);
      return { n };
    }

    @Post('stream')
    @HttpCode(200)
    @Header('x-custom', 'stream')
    stream(@Headers('idempotency-key') key: string | undefined) {
      this.app.count('stream', key);
      const body = Readable.from(
        (async function* chunks() {
          for (const chunk of STREAM_CHUNKS) {
            yield Buffer.from(chunk);
            await sleep(2);
          }
        })(),
      );
      return new StreamableFile(body, { type: 'text/plain; charset=utf-8' });
    }
  }
  if (routes === 'decorator') Idempotent()(OrdersController);
  return OrdersController;
}

/**
 * NestJS 11 on the Express or the Fastify platform; routes protected by `@Idempotent()` on the
 * controller, or by the interceptor registered as APP_INTERCEPTOR.
 */
export function nestFactory({
  platform,
  routes,
}: {
  platform: 'express' | 'fastify';
  routes: 'decorator' | 'global';
}): ServerFactory {
  return async (app, options) => {
    @Module({
      imports: [IdempotencyModule.forRoot(options)],
      controllers: [controllerFor(routes)],
      providers: [
        { provide: TEST_APP, useValue: app },
        ...(routes === 'global' ? [{ provide: APP_INTERCEPTOR, useExisting: IdempotencyInterceptor }] : []),
      ],
    })
    class AppModule {}

    // Fastify: closing drops every connection, as in ./fastify.ts.
    const adapter = platform === 'express' ? new ExpressAdapter() : new FastifyAdapter({ forceCloseConnections: true });
    const nest = await NestFactory.create(AppModule, adapter, { logger: false });
    await nest.listen(0, '127.0.0.1');
    const address = nest.getHttpServer().address() as { port: number };
    return { url: `http://127.0.0.1:${address.port}`, close: () => nest.close() };
  };
}
