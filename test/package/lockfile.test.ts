import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

// CI installs with `npm ci`, which refuses a lockfile that is out of step with package.json
// (see scripts/complete-lockfile.mjs for the usual cause here): catch that before CI does.
it('package-lock.json is one npm ci accepts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'idempo-lock-'));
  try {
    cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
    cpSync(join(ROOT, 'package-lock.json'), join(dir, 'package-lock.json'));
    const out = execFileSync('npm', ['ci', '--dry-run', '--ignore-scripts', '--no-audit', '--no-fund'], {
      cwd: dir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(out).toMatch(/added \d+ packages/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);
