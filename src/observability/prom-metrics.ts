/**
 * Counters and histograms for the request path, registered on a prom-client registry as metrics
 * of its own kind: prom-client's own validate and hash their labels on every `inc()` and
 * `observe()`, which cost more than the rest of a replay. Here a series is looked up once by a key
 * its caller builds, and counting is adding to a number; the registry formats them at scrape time
 * like its own (it asks any registered metric for `get()`).
 *
 * @module
 */

/** One labelled series of a {@link FastCounter}. */
export interface CounterSeries {
  value: number;
}

/** One labelled series of a {@link FastHistogram}: per-bucket counts (not cumulative), sum and count. */
export interface HistogramSeries {
  readonly buckets: Float64Array;
  sum: number;
  count: number;
}

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

abstract class FastMetric<S> {
  readonly aggregator = 'sum';
  readonly #series = new Map<string, { labels: Record<string, string>; series: S }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {}

  /** The series with these label values (in `labelNames` order), found by `key`: one key per set of values. */
  series(key: string, values: readonly string[]): S {
    const found = this.#series.get(key);
    if (found !== undefined) return found.series;
    const labels: Record<string, string> = {};
    this.labelNames.forEach((label, i) => {
      labels[label] = values[i] ?? '';
    });
    const series = this.make();
    this.#series.set(key, { labels, series });
    return series;
  }

  protected abstract make(): S;

  protected entries() {
    return this.#series.values();
  }

  reset(): void {
    this.#series.clear();
  }
}

/** A Prometheus counter. */
export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = 'counter';

  protected make(): CounterSeries {
    return { value: 0 };
  }

  get() {
    const values: MetricValue[] = [];
    for (const { labels, series } of this.entries()) values.push({ value: series.value, labels });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** A Prometheus histogram with fixed bucket bounds (seconds). */
export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = 'histogram';
  readonly #bounds: Float64Array;

  constructor(name: string, help: string, labelNames: readonly string[], bounds: readonly number[]) {
    super(name, help, labelNames);
    this.#bounds = Float64Array.from([...bounds].sort((a, b) => a - b));
  }

  protected make(): HistogramSeries {
    return { buckets: new Float64Array(this.#bounds.length), sum: 0, count: 0 };
  }

  observe(series: HistogramSeries, value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    if (i < bounds.length) series.buckets[i] = (series.buckets[i] as number) + 1;
    series.sum += value;
    series.count++;
  }

  get() {
    const values: MetricValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, series } of this.entries()) {
      let cumulative = 0;
      this.#bounds.forEach((bound, i) => {
        cumulative += series.buckets[i] as number;
        values.push({ value: cumulative, labels: { ...labels, le: bound }, metricName: bucket });
      });
      values.push({ value: series.count, labels: { ...labels, le: '+Inf' }, metricName: bucket });
      values.push({ value: series.sum, labels, metricName: `${this.name}_sum` });
      values.push({ value: series.count, labels, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}
