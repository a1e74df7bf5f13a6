/**
 * The NestJS adapter (`idempo/nestjs`): `IdempotencyModule` provides the engine, the
 * `IdempotencyInterceptor` runs the protocol, and `@Idempotent()` marks the routes it covers. It
 * works on both the Express and the Fastify platform: the interceptor reads the request Nest
 * already parsed and captures the response where it leaves, on the underlying node:http objects.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  applyDecorators,
  type CallHandler,
  createParamDecorator,
  type DynamicModule,
  type ExecutionContext,
  type FactoryProvider,
  Global,
  Inject,
  Injectable,
  Module,
  type ModuleMetadata,
  type NestInterceptor,
  SetMetadata,
  UseInterceptors,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { catchError, defer, finalize, from, mergeMap, type Observable, of, throwError } from 'rxjs';
import type { Idempotency, IdempotencyContext, IdempotencyRequest, IdempotencyResponse } from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { type EngineOrOptions, engineOf } from './engine-of.js';
import { capture, writeResponse } from './node.js';
import { bodyOf, headerOf } from './node-body.js';

/** Injection token of the engine `IdempotencyModule` provides: `@Inject(IDEMPOTENCY) idem: Idempotency`. */
export const IDEMPOTENCY = Symbol.for('idempo.Idempotency');

/** Metadata key `@Idempotent()` sets on a route or controller. */
export const IDEMPOTENT_METADATA = 'idempo:idempotent';

// Nest's own metadata keys (from @nestjs/common/constants) and route param types, read to tell
// routes that send their response themselves through @Res()/@Next().
const ROUTE_ARGS_METADATA = '__routeArguments__';
const RESPONSE_PASSTHROUGH_METADATA = '__responsePassthrough__';
const RESPONSE_PARAM = '1';
const NEXT_PARAM = '2';

/**
 * Options of {@link IdempotencyModule.forRoot}: the engine's options, or `{ idempotency }` with
 * an engine made by `createIdempotency()`.
 */
export type IdempotencyModuleOptions = EngineOrOptions;

/** Options of {@link IdempotencyModule.forRootAsync}: a factory for the module options, with its dependencies. */
export interface IdempotencyModuleAsyncOptions {
  /** Modules the factory's dependencies come from, e.g. `[ConfigModule]`. */
  imports?: ModuleMetadata['imports'];
  /** Providers handed to `useFactory`, in order. */
  inject?: FactoryProvider['inject'];
  /** Returns the module options (a store, usually built from configuration). */
  useFactory(...args: never[]): IdempotencyModuleOptions | Promise<IdempotencyModuleOptions>;
}

const UNPROTECTED = unprotectedContext();
const contexts = new WeakMap<IncomingMessage, IdempotencyContext>();
const handled = new WeakSet<IncomingMessage>();

/** The request as Nest hands it: Express's request, or Fastify's with the node request in `raw`. */
interface PlatformRequest {
  raw?: IncomingMessage;
  headers: IncomingMessage['headers'];
  method?: string;
  url?: string;
  originalUrl?: string;
  body?: unknown;
  rawBody?: unknown;
}

/** The response as Nest hands it: Express's response, or Fastify's reply with the node response in `raw`. */
interface PlatformResponse {
  raw?: ServerResponse;
}

/**
 * Runs the idempotency protocol around a route. `@Idempotent()` applies it to a route or a
 * controller; registering it as `APP_INTERCEPTOR` applies it to every route, and `@Idempotent(false)`
 * leaves one out. Only the engine's `methods` (default POST, PATCH) take part either way.
 *
 * Register it globally, or mark routes, and put it outside interceptors that reshape responses:
 * what it stores is the response as it left the server, and a replay sends exactly that.
 */
@Injectable()
export class IdempotencyInterceptor implements NestInterceptor {
  private readonly maxResponseBytes: number;

  constructor(
    @Inject(IDEMPOTENCY) private readonly idem: Idempotency,
    @Inject(Reflector) private readonly reflector: Reflector,
  ) {
    this.maxResponseBytes = idem.limits.maxResponseBytes;
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const marked = this.reflector.getAllAndOverride<boolean | undefined>(IDEMPOTENT_METADATA, [
      context.getHandler(),
      context.getClass(),
    ]);
    if (marked === false) return next.handle();
    const http = context.switchToHttp();
    const req = http.getRequest<PlatformRequest>();
    const res = http.getResponse<PlatformResponse>();
    const rawReq = req.raw ?? (req as unknown as IncomingMessage);
    const rawRes = res.raw ?? (res as unknown as ServerResponse);
    // Applied twice (globally and by @Idempotent()): the outer one already runs the protocol.
    if (handled.has(rawReq)) return next.handle();
    handled.add(rawReq);

    return defer(() => this.idem.begin(nestRequest(req, rawReq))).pipe(
      mergeMap((decision) => {
        if (decision.action === 'respond') {
          contexts.set(rawReq, UNPROTECTED);
          if (sendsItsOwnResponse(context)) {
            writeResponse(rawRes, decision.response);
          } else {
            sendInstead(rawRes, decision.response);
          }
          return of(undefined);
        }
        if (decision.action === 'pass') {
          contexts.set(rawReq, UNPROTECTED);
          return next.handle();
        }
        if (!capture(rawRes, decision, this.maxResponseBytes)) return of(undefined);
        contexts.set(rawReq, decision.context);
        // A client that hangs up does not stop the work: the lease is renewed until the handler's stream ends.
        let ended!: () => void;
        decision.track(new Promise<void>((resolve) => (ended = resolve)));
        return next.handle().pipe(
          catchError((error: unknown) => from(decision.abort(error)).pipe(mergeMap(() => throwError(() => error)))),
          finalize(() => ended()),
        );
      }),
    );
  }
}

/**
 * Provides the engine (token {@link IDEMPOTENCY}) and {@link IdempotencyInterceptor} to the whole
 * application; import it once, in the root module.
 *
 * @example
 * ```ts
 * @Module({ imports: [IdempotencyModule.forRoot({ store: createMemoryStore() })], controllers: [PaymentsController] })
 * export class AppModule {}
 *
 * @Controller('payments')
 * export class PaymentsController {
 *   @Post() @Idempotent()
 *   create(@Body() body: CreatePayment, @IdempotencyCtx() ctx: IdempotencyContext) {
 *     return ctx.step('charge', () => this.payments.charge(body));
 *   }
 * }
 * ```
 */
@Global()
@Module({})
// biome-ignore lint/complexity/noStaticOnlyClass: Nest modules are classes; forRoot/forRootAsync are the convention
export class IdempotencyModule {
  /**
   * The module with an engine built from `options` now.
   *
   * @example
   * ```ts
   * IdempotencyModule.forRoot({ store: createMemoryStore(), concurrent: 'wait' })
   * ```
   */
  static forRoot(options: IdempotencyModuleOptions): DynamicModule {
    return {
      module: IdempotencyModule,
      global: true,
      providers: [{ provide: IDEMPOTENCY, useValue: engineOf(options) }, IdempotencyInterceptor],
      exports: [IDEMPOTENCY, IdempotencyInterceptor],
    };
  }

  /**
   * The module with an engine built from options a factory returns, e.g. from configuration.
   *
   * @example
   * ```ts
   * IdempotencyModule.forRootAsync({
   *   imports: [ConfigModule],
   *   inject: [ConfigService],
   *   useFactory: (config: ConfigService) => ({ store: createRedisStore({ client: new Redis(config.get('REDIS_URL')) }) }),
   * })
   * ```
   */
  static forRootAsync(options: IdempotencyModuleAsyncOptions): DynamicModule {
    return {
      module: IdempotencyModule,
      global: true,
      imports: options.imports ?? [],
      providers: [
        {
          provide: IDEMPOTENCY,
          inject: options.inject ?? [],
          useFactory: async (...args: unknown[]) => engineOf(await options.useFactory(...(args as never[]))),
        },
        IdempotencyInterceptor,
      ],
      exports: [IDEMPOTENCY, IdempotencyInterceptor],
    };
  }
}

/**
 * Marks a route or a controller as idempotent and applies {@link IdempotencyInterceptor} to it;
 * `@Idempotent(false)` leaves a route out when the interceptor is registered globally.
 *
 * @example
 * ```ts
 * @Post() @Idempotent()
 * create(@Body() body: CreateOrder) { return this.orders.create(body); }
 * ```
 */
export function Idempotent(enabled = true): MethodDecorator & ClassDecorator {
  return enabled
    ? applyDecorators(SetMetadata(IDEMPOTENT_METADATA, true), UseInterceptors(IdempotencyInterceptor))
    : SetMetadata(IDEMPOTENT_METADATA, false);
}

/**
 * The idempotency context of a request the interceptor ran for, or `undefined`. Unprotected
 * requests (method not covered, no key, fail-open) get a context whose `step()` simply runs.
 *
 * @example
 * ```ts
 * create(@Req() req: Request) { const ctx = idempotencyContext(req); }
 * ```
 */
export function idempotencyContext(req: IncomingMessage | { raw: IncomingMessage }): IdempotencyContext | undefined {
  return contexts.get('raw' in req && req.raw !== undefined ? req.raw : (req as IncomingMessage));
}

/**
 * Parameter decorator for the request's idempotency context.
 *
 * @example
 * ```ts
 * create(@IdempotencyCtx() ctx: IdempotencyContext) { return ctx.step('charge', charge); }
 * ```
 */
export const IdempotencyCtx = createParamDecorator(function idempotencyCtx(
  _data: unknown,
  context: ExecutionContext,
): IdempotencyContext {
  return idempotencyContext(context.switchToHttp().getRequest()) ?? UNPROTECTED;
});

function nestRequest(req: PlatformRequest, raw: IncomingMessage): IdempotencyRequest {
  return {
    method: raw.method ?? 'GET',
    url: req.originalUrl ?? req.url ?? raw.url ?? '/',
    header: (name) => headerOf(raw.headers, name),
    // Nest parses bodies before interceptors run; with `rawBody: true` the exact bytes are kept.
    body: (maxBytes) =>
      bodyOf(raw, maxBytes, () => (req.rawBody instanceof Uint8Array ? req.rawBody : req.body), 'req.body'),
  };
}

/** Whether the route takes `@Res()` or `@Next()` without passthrough, so Nest sends nothing for it. */
function sendsItsOwnResponse(context: ExecutionContext): boolean {
  const host = context.getClass();
  const method = context.getHandler().name;
  const args = Reflect.getMetadata(ROUTE_ARGS_METADATA, host, method) as Record<string, unknown> | undefined;
  if (args === undefined) return false;
  const takesResponse = Object.keys(args).some((key) => {
    const type = key.split(':')[0];
    return type === RESPONSE_PARAM || type === NEXT_PARAM;
  });
  return takesResponse && Reflect.getMetadata(RESPONSE_PASSTHROUGH_METADATA, host, method) !== true;
}

/**
 * Lets Nest send whatever it sends for the route (interceptors around this one, serializers and
 * the platform all still run) and puts `response` on the wire in its place: what Nest writes is
 * dropped, headers it adds are removed, and its `end()` sends `response`. So a replay is the stored
 * response byte for byte, whatever the layers above would have made of a value.
 */
function sendInstead(res: ServerResponse, response: IdempotencyResponse): void {
  const before = new Set(res.getHeaderNames());
  const { writeHead, write, end } = res;
  res.writeHead = function droppedWriteHead(this: ServerResponse) {
    return this;
  } as ServerResponse['writeHead'];
  res.write = function droppedWrite(_chunk: unknown, encoding?: unknown, callback?: unknown) {
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') process.nextTick(done as () => void);
    return true;
  } as ServerResponse['write'];
  res.end = function substitutedEnd(this: ServerResponse, ...args: unknown[]) {
    res.writeHead = writeHead;
    res.write = write;
    res.end = end;
    for (const name of res.getHeaderNames()) if (!before.has(name)) res.removeHeader(name);
    const done = args.find((arg) => typeof arg === 'function') as (() => void) | undefined;
    if (done) res.once('finish', done);
    writeResponse(res, response);
    return this;
  } as ServerResponse['end'];
}
