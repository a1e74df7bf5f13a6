import { propagation, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import { createIdempotency } from '../engine/engine.js';
import { storeKeyFor } from '../engine/fingerprint.js';
import { createMemoryStore } from '../stores/memory.js';
import { idempoTracing } from './tracing.js';

function setup() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracing = idempoTracing({ tracer: provider.getTracer('test') });
  return { exporter, tracing };
}

function post(key: string | undefined, body = '{"amount":1}'): Request {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== undefined) headers['idempotency-key'] = key;
  return new Request('http://test/pay', { method: 'POST', headers, body });
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

describe('idempoTracing', () => {
  it('makes one span per keyed request with its outcome and hashed key, and a child span per store call', async () => {
    const { exporter, tracing } = setup();
    const idem = createIdempotency({ store: createMemoryStore(), observe: tracing });
    const ok = async () => Response.json({ id: 1 }, { status: 201 });
    await idem.handle(post('secret-key-1'), ok);
    await idem.handle(post('secret-key-1'), ok);
    await idem.handle(post('secret-key-1', '{"amount":2}'), ok);

    const spans = exporter.getFinishedSpans();
    const requests = spans.filter((s) => s.name === 'idempo.request');
    expect(requests.map((s) => s.attributes['idempo.outcome'])).toEqual(['executed', 'replayed', 'mismatch']);
    expect(requests.map((s) => s.attributes['idempo.replayed'])).toEqual([false, true, false]);
    expect(requests.map((s) => s.attributes['http.response.status_code'])).toEqual([201, 201, 422]);
    const hash = storeKeyFor('secret-key-1', undefined);
    for (const span of requests) expect(span.attributes['idempo.key_hash']).toBe(hash);
    // The raw key is in no attribute of any span.
    expect(JSON.stringify(spans.map((s) => s.attributes))).not.toContain('secret-key-1');

    const [executed] = requests as [ReadableSpan];
    const children = spans.filter((s) => parentOf(s) === executed.spanContext().spanId);
    expect(children.map((s) => [s.name, s.attributes['idempo.store.result']])).toEqual([
      ['idempo.store.claim', 'acquired'],
      ['idempo.store.complete', 'ok'],
    ]);
    for (const child of children) expect(child.spanContext().traceId).toBe(executed.spanContext().traceId);
  });

  it('marks a recovered run, a release, and makes no span for a request idempo does not protect', async () => {
    const { exporter, tracing } = setup();
    const store = createMemoryStore();
    const idem = createIdempotency({ store, lease: 50, observe: tracing });
    // A run that crashed: it claimed the key and never completed it.
    const crashed = createIdempotency({ store, lease: 20 });
    const run = await crashed.begin({
      method: 'POST',
      url: '/pay',
      header: (name) => (name === 'idempotency-key' ? 'k2' : name === 'content-type' ? 'application/json' : undefined),
      body: async () => new TextEncoder().encode('{"amount":1}'),
    });
    expect(run.action).toBe('execute');
    // Its process is gone: nothing renews its lease any more.
    if (run.action === 'execute') run.clientGone();
    await new Promise((resolve) => setTimeout(resolve, 40));
    await idem.handle(post('k2'), async () => new Response('ok'));
    await idem.handle(post('k3'), async () => new Response('fail', { status: 500 }));
    await idem.handle(post(undefined), async () => new Response('unkeyed'));

    const requests = exporter.getFinishedSpans().filter((s) => s.name === 'idempo.request');
    expect(requests).toHaveLength(2);
    expect(requests[0]?.attributes['idempo.recovered']).toBe(true);
    expect(requests[0]?.attributes['idempo.outcome']).toBe('executed');
    expect(requests[1]?.attributes['idempo.outcome']).toBe('released');
    expect(requests[1]?.attributes['idempo.reason']).toBe('status');
  });

  it('writes the request span as traceparent for the work the run calls', async () => {
    const { exporter, tracing } = setup();
    // The W3C format, written by hand: the test needs no propagator package.
    propagation.setGlobalPropagator({
      inject(context, carrier, setter) {
        const span = trace.getSpanContext(context);
        if (span) setter.set(carrier, 'traceparent', `00-${span.traceId}-${span.spanId}-0${span.traceFlags}`);
      },
      extract: (context) => context,
      fields: () => ['traceparent'],
    });
    try {
      const idem = createIdempotency({ store: createMemoryStore(), observe: tracing });
      const carrier: Record<string, string> = {};
      await idem.handle(post('p'), async (_request, ctx) => {
        tracing.inject(ctx, carrier);
        return new Response('ok');
      });
      const [span] = exporter.getFinishedSpans().filter((s) => s.name === 'idempo.request');
      expect(carrier.traceparent).toBe(`00-${span?.spanContext().traceId}-${span?.spanContext().spanId}-01`);
    } finally {
      propagation.disable();
    }
  });
});
