// Loaded with `node --import` into a gateway process by admin.test.ts: registers an OpenTelemetry
// SDK whose finished spans are appended as JSON lines to $IDEMPO_TEST_SPANS, and the W3C
// traceparent format (written here: the test needs no propagator package).
import { appendFileSync } from 'node:fs';
import { propagation, TraceFlags, trace } from '@opentelemetry/api';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

const file = process.env.IDEMPO_TEST_SPANS;
const exporter = {
  export(spans, done) {
    for (const span of spans) {
      const line = {
        name: span.name,
        traceId: span.spanContext().traceId,
        spanId: span.spanContext().spanId,
        parent: span.parentSpanContext?.spanId,
        attributes: span.attributes,
      };
      appendFileSync(file, `${JSON.stringify(line)}\n`);
    }
    done({ code: 0 });
  },
  shutdown: async () => {},
};
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
propagation.setGlobalPropagator({
  inject(context, carrier, setter) {
    const span = trace.getSpanContext(context);
    if (span) setter.set(carrier, 'traceparent', `00-${span.traceId}-${span.spanId}-0${span.traceFlags}`);
  },
  extract(context, carrier, getter) {
    const match = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$/.exec(getter.get(carrier, 'traceparent') ?? '');
    if (!match) return context;
    return trace.setSpanContext(context, {
      traceId: match[1],
      spanId: match[2],
      traceFlags: match[3] === '1' ? TraceFlags.SAMPLED : TraceFlags.NONE,
      isRemote: true,
    });
  },
  fields: () => ['traceparent'],
});
