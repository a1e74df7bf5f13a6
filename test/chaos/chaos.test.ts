import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// The short version of `npm run chaos`: the harness runs as its own process (it owns and ends
// every process it starts, also when this test times out), small counts, and the figures are
// judged here. The one kind of duplicate allowed is the one no gateway can prevent alone: an
// instance SIGKILLed while its upstream worked (or before it could store the answer), re-driven
// after the lease, and then it must carry the `Idempo-Redrive` marker.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RUN = join(ROOT, 'test/chaos/run.js');
const ALLOWED = [
  'instance killed mid-upstream (marked)',
  'instance killed after upstream answered, before storing (marked)',
];
const dir = mkdtempSync(join(tmpdir(), 'idempo-chaos-test-'));

interface ScenarioResult {
  name: string;
  error?: string;
  operations: number;
  executions: number;
  duplicates: number;
  markedDuplicates: number;
  unexplainedDuplicates: number;
  causes: Record<string, number>;
  wrongSuccesses: number;
  unexecutedSuccesses: number;
  stuckKeys: number;
  finalFailed: number;
  unverifiedSuccesses: number;
  abandonedAttempts: number;
  slowExecutions: number;
  neverExecuted: number;
  chaos: { kills: number; storeOutages: number; balancer: { droppedResponses: number } };
  failover?: { faults: number; promotions: number; lostWrites?: Record<string, number> };
  evidence: unknown;
}

function runChaos(scenario: string, args: string[], timeout = 55_000): Promise<ScenarioResult> {
  const json = join(dir, `${scenario}.json`);
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [RUN, '--quick', '--scenario', scenario, '--json', json, ...args],
      { cwd: ROOT, timeout, killSignal: 'SIGINT', maxBuffer: 10_000_000 },
      (error, stdout, stderr) => {
        // Exit code 1 means the figures are bad; they are judged below, with the evidence.
        if (error && error.code !== 1) {
          reject(new Error(`chaos run failed (${error.code ?? error.signal}): ${stderr}\n${stdout}`));
          return;
        }
        const [result] = (JSON.parse(readFileSync(json, 'utf8')) as { scenarios: ScenarioResult[] }).scenarios;
        if (!result) reject(new Error(`no result in ${json}: ${stdout}`));
        else resolve(result);
      },
    );
  });
}

// A short run makes few attempts: at the full run's 5% a run can abandon none, and the check
// that attempts were abandoned would fail by chance. 15% abandons a dozen or more.
const SHORT = ['--ops', '50', '--duration', '6s', '--abandon-rate', '0.15'];

function expectNeverTwice(result: ScenarioResult): void {
  expect(result.error).toBeUndefined();
  // Not vacuous: operations ran and the faults happened.
  expect(result.operations).toBeGreaterThan(0);
  expect(result.executions).toBeGreaterThanOrEqual(result.operations - result.neverExecuted);
  expect(result.chaos.balancer.droppedResponses).toBeGreaterThan(0);
  expect(result.chaos.kills).toBeGreaterThan(0);
  expect(result.abandonedAttempts).toBeGreaterThan(0);
  expect(result.slowExecutions).toBeGreaterThan(0);
  const evidence = JSON.stringify(result.evidence);
  expect(
    Object.keys(result.causes).filter((cause) => !ALLOWED.includes(cause)),
    evidence,
  ).toEqual([]);
  expect(result.unexplainedDuplicates, evidence).toBe(0);
  expect(result.markedDuplicates, 'every allowed duplicate carries Idempo-Redrive').toBe(result.duplicates);
  expect(result.wrongSuccesses, evidence).toBe(0);
  expect(result.unexecutedSuccesses, evidence).toBe(0);
  expect(result.stuckKeys, evidence).toBe(0);
  // Every key's final retry got its kept result, so every success a client got was compared with
  // it: a success is judged wrong only against a final replay, and none may go unjudged.
  expect(result.finalFailed, evidence).toBe(0);
  expect(result.unverifiedSuccesses, evidence).toBe(0);
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('chaos harness self-check', () => {
  it('sees duplicates and wrong successes when the gateway does not protect the POSTs', async () => {
    const result = await runChaos('control-unprotected', ['--ops', '20', '--duration', '3s']);
    expect(result.error).toBeUndefined();
    expect(result.chaos.balancer.droppedResponses).toBeGreaterThan(0);
    expect(result.unexplainedDuplicates).toBeGreaterThan(0);
    expect(result.wrongSuccesses).toBeGreaterThan(0);
  }, 60_000);
});

describe('chaos (short): 3 instances, 40% of answers dropped, kills, abandoning clients, slow upstream', () => {
  it("gateway on a private Redis stopped hard mid-run: nothing runs twice but a killed instance's marked re-drive", async () => {
    const result = await runChaos('gateway-redis', SHORT);
    expect(result.chaos.storeOutages).toBeGreaterThan(0);
    expectNeverTwice(result);
  }, 60_000);

  it("library mode (idempotent() + ctx.step) on SQLite: nothing runs twice but a killed instance's marked re-run", async () => {
    const result = await runChaos('library-sqlite', SHORT);
    expectNeverTwice(result);
  }, 60_000);
});

// The PostgreSQL failover run with the option on, small: a primary with a synchronous standby,
// crashed under load and the standby promoted (at least once), with synchronousCommit 'on'. The
// control (an asynchronous standby) is left to `npm run chaos`: in a run this short it may lose
// nothing, so its figures prove nothing either way. The lease is 8 s instead of the full run's
// 20 s to keep the run near 30 s: still several times the apps' 503 window after a crash (about
// 1.7 s: the 1.5 s failure detection, then the promotion).
describe('chaos (short): PostgreSQL failover', () => {
  it("a crashed primary's synchronous standby promoted under load (synchronousCommit 'on'): nothing runs twice", async () => {
    const result = await runChaos(
      'failover-postgres-promote-sync',
      ['--ops', '60', '--duration', '6s', '--lease', '8s'],
      80_000,
    );
    expect(result.error).toBeUndefined();
    expect(result.operations).toBeGreaterThan(0);
    expect(result.failover?.promotions).toBeGreaterThan(0);
    // The evidence was read back from the crashed primaries (an empty count is fine).
    expect(result.failover?.lostWrites).toBeDefined();
    const evidence = JSON.stringify(result.evidence);
    expect(result.duplicates, evidence).toBe(0);
    expect(result.wrongSuccesses, evidence).toBe(0);
    expect(result.unexecutedSuccesses, evidence).toBe(0);
    expect(result.stuckKeys, evidence).toBe(0);
    expect(result.finalFailed, evidence).toBe(0);
    expect(result.unverifiedSuccesses, evidence).toBe(0);
  }, 90_000);
});
