import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { LeaseRenewer, type Renewable } from './lease-renewer.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A renewable whose renewals settle after `delayMs`, the first `failures` of them failing. */
function execution({ delayMs = 0, failures = 0 } = {}) {
  const item: Renewable & { calls: number[]; overlaps: number } = {
    calls: [],
    overlaps: 0,
    renewedAt: Date.now(),
    renewing: false,
    renewerSlot: -1,
    renew() {
      if (item.renewing) item.overlaps++;
      item.calls.push(Date.now());
      item.renewing = true;
      setTimeout(() => {
        item.renewing = false;
        if (failures > 0) failures--;
        else item.renewedAt = Date.now();
      }, delayMs);
    },
  };
  return item;
}

const gapsOf = (calls: number[]) => calls.slice(1).map((at, i) => at - (calls[i] as number));

describe('LeaseRenewer', () => {
  it('renews a running execution once a third of the lease has passed since the last renewal', async () => {
    const renewer = new LeaseRenewer(300);
    const running = execution();
    renewer.add(running);
    await sleep(700);
    renewer.delete(running);
    // Due 100 ms after each renewal, checked every 50 ms: not every tick, and not never.
    expect(running.calls.length).toBeGreaterThanOrEqual(2);
    expect(running.calls.length).toBeLessThanOrEqual(7);
    for (const gap of gapsOf(running.calls)) expect(gap).toBeGreaterThanOrEqual(90);
  });

  it('tries a failed renewal again at the next tick, not a third of the lease later', async () => {
    const renewer = new LeaseRenewer(600);
    const flaky = execution({ failures: 2, delayMs: 5 });
    renewer.add(flaky);
    await sleep(550);
    renewer.delete(flaky);
    // Ticks every 100 ms, due after 200: first try at about 200, the retries about 100 apart.
    expect(flaky.calls.length).toBeGreaterThanOrEqual(3);
    const [first, second] = gapsOf(flaky.calls);
    expect(first).toBeLessThan(190);
    expect(second).toBeLessThan(190);
  });

  it('never starts a renewal while the previous one is still on its way', async () => {
    const renewer = new LeaseRenewer(120);
    const slow = execution({ delayMs: 90 });
    renewer.add(slow);
    await sleep(400);
    renewer.delete(slow);
    expect(slow.calls.length).toBeGreaterThan(1);
    expect(slow.overlaps).toBe(0);
  });

  it('stops renewing an execution once it is deleted, and renews the others', async () => {
    const renewer = new LeaseRenewer(60);
    const done = execution();
    const running = execution();
    const later = execution();
    renewer.add(done);
    renewer.add(running);
    renewer.add(later);
    renewer.delete(done);
    // A second delete (commit after abort) must not take another execution out.
    renewer.delete(done);
    await sleep(150);
    renewer.delete(later);
    renewer.delete(running);
    expect(done.calls).toHaveLength(0);
    expect(running.calls.length).toBeGreaterThan(0);
    expect(later.calls.length).toBeGreaterThan(0);
  });

  it('does not keep the process alive while executions run', () => {
    // The built module: the child process runs plain JavaScript.
    const built = fileURLToPath(new URL('../../dist/engine/lease-renewer.js', import.meta.url));
    const script = `import { LeaseRenewer } from ${JSON.stringify(built)};
      new LeaseRenewer(60_000).add({ renewedAt: Date.now(), renewing: false, renewerSlot: -1, renew() {} });`;
    const started = Date.now();
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore', timeout: 10_000 });
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});
