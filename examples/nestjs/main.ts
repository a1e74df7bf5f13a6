// NestJS + idempo: a payments endpoint that charges once per Idempotency-Key, on the Express
// platform (pass `new FastifyAdapter()` from @nestjs/platform-fastify for Fastify; nothing else changes).
//   npm run build && npx tsc -p examples/nestjs && node dist-check/examples/nestjs/main.js
//   curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// Send it twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { BadRequestException, Body, Controller, Get, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { IdempotencyContext } from 'idempo';
import { createMemoryStore } from 'idempo/memory';
import { IdempotencyCtx, IdempotencyModule, Idempotent } from 'idempo/nestjs';

let charges = 0;

@Controller()
class PaymentsController {
  @Post('payments')
  @Idempotent()
  async create(@Body() body: { amount?: unknown }, @IdempotencyCtx() ctx: IdempotencyContext) {
    const amount = body?.amount;
    if (typeof amount !== 'number' || !Number.isInteger(amount) || amount <= 0) {
      throw new BadRequestException('amount must be a positive integer number of cents');
    }
    // A step's result survives a released key: a retry after a crash does not charge again.
    return ctx.step('charge', () => {
      charges++;
      return { id: `pay_${randomUUID()}`, amount };
    });
  }

  @Get('stats')
  stats() {
    return { charges };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore() })],
  controllers: [PaymentsController],
})
class AppModule {}

const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] });
await app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1');
console.log(`nestjs example on ${await app.getUrl()}`);
