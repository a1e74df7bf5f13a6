import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publint } from 'publint';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

// The built package, copied where no node_modules exist: whatever imports here loads no
// dependency at all, peer or not.
const bare = mkdtempSync(join(tmpdir(), 'idempo-pkg-'));
cpSync(join(ROOT, 'dist'), join(bare, 'dist'), { recursive: true });
cpSync(join(ROOT, 'package.json'), join(bare, 'package.json'));
// The same with better-sqlite3 installed beside it, as `npm install idempo` leaves it.
const withSqlite = mkdtempSync(join(tmpdir(), 'idempo-pkg-sqlite-'));
cpSync(bare, withSqlite, { recursive: true });
mkdirSync(join(withSqlite, 'node_modules'));
symlinkSync(join(ROOT, 'node_modules', 'better-sqlite3'), join(withSqlite, 'node_modules', 'better-sqlite3'), 'dir');
afterAll(() => {
  rmSync(bare, { recursive: true, force: true });
  rmSync(withSqlite, { recursive: true, force: true });
});

function runIn(dir: string, source: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', source], { cwd: dir, encoding: 'utf8' }).trim();
}

describe('the published package', () => {
  it('imports the core, memory store and node adapter with no dependency installed', () => {
    const out = runIn(
      bare,
      `const core = await import('idempo');
       const { createMemoryStore } = await import('idempo/memory');
       const { idempotent } = await import('idempo/node');
       const idem = core.createIdempotency({ store: createMemoryStore() });
       console.log(typeof idempotent(idem, () => {}), typeof core.IdempotencyError);`,
    );
    expect(out).toBe('function function');
  });

  // better-sqlite3 is an optional dependency: `npm install idempo` brings it, but an install
  // with --omit=optional, or one whose native build failed, goes on without it.
  it('says how to install better-sqlite3 when a SQLite store is made without it', () => {
    const out = runIn(
      bare,
      `const { createSqliteStore } = await import('idempo/sqlite');
       try { createSqliteStore({ path: ':memory:' }); console.log('loaded'); }
       catch (error) { console.log(error.code + ' ' + error.message); }`,
    );
    expect(out).toMatch(/^IDEMPO_DEPENDENCY_MISSING .*npm install better-sqlite3/);
  });

  it('loads better-sqlite3 only when a SQLite store is made, where it is installed', () => {
    const out = runIn(
      withSqlite,
      `import { createRequire } from 'node:module';
       const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((p) => p.includes('better-sqlite3'));
       await import('idempo');
       const { createSqliteStore } = await import('idempo/sqlite');
       const before = loaded();
       const store = createSqliteStore({ path: ':memory:' });
       const after = loaded();
       await store.close();
       console.log(before + ' ' + after);`,
    );
    expect(out).toBe('false true');
  });

  // Metrics need prom-client (an optional dependency), traces @opentelemetry/api (an optional
  // peer); key usage needs nothing, and the core loads neither.
  it('loads prom-client and @opentelemetry/api only for the subpaths that use them', () => {
    const out = runIn(
      bare,
      `const results = [];
       for (const spec of ['idempo', 'idempo/usage', 'idempo/metrics', 'idempo/tracing']) {
         try { await import(spec); results.push(spec + ' ok'); }
         catch (error) { results.push(spec + ' ' + error.code + ' ' + /'([^']+)'/.exec(error.message)?.[1]); }
       }
       console.log(results.join(', '));`,
    );
    expect(out.split(', ')).toEqual([
      'idempo ok',
      'idempo/usage ok',
      'idempo/metrics ERR_MODULE_NOT_FOUND prom-client',
      'idempo/tracing ERR_MODULE_NOT_FOUND @opentelemetry/api',
    ]);
  });

  it('requires the core from CommonJS on Node ≥ 20.19 (no top-level await)', () => {
    const out = execFileSync(process.execPath, ['-e', `console.log(typeof require('idempo').createIdempotency)`], {
      cwd: bare,
      encoding: 'utf8',
    }).trim();
    expect(out).toBe('function');
  });

  it('passes publint', async () => {
    const { messages } = await publint({ pkgDir: ROOT, level: 'warning', strict: true });
    expect(messages.map((m) => `${m.type} ${m.code} ${m.path.join('.')}`)).toEqual([]);
  });
});
