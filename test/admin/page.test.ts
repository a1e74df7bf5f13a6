import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, postJson, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// The admin page in a real browser: Debian's chromium (playwright's own download is not
// available here), driven by playwright-core, against a real gateway on SQLite.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TOKEN = 'test-admin-token-0123456789';
// Screenshots for a human to look at (the closing notes quote them); not kept in the repository.
const SHOTS = process.env.IDEMPO_SCREENSHOTS ?? join(tmpdir(), 'idempo-admin-screenshots');
const dir = mkdtempSync(join(tmpdir(), 'idempo-admin-'));

let browser: Browser;
let upstream: Awaited<ReturnType<typeof startUpstream>>;
let gateway: Awaited<ReturnType<typeof spawnGateway>>;
let admin = '';
let letGo: () => void = () => {};

beforeAll(async () => {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM_PATH)`).toBe(true);
  upstream = await startUpstream(async (req, res) => {
    if (req.url === '/hold') await new Promise<void>((resolve) => (letGo = resolve));
    const status = req.url === '/reject' ? 422 : 201;
    res
      .writeHead(status, { 'content-type': 'application/json' })
      .end(JSON.stringify({ id: `pay_${upstream.hits.length}` }));
  });
  gateway = await spawnGateway(
    [
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      `sqlite:${join(dir, 'admin.db')}`,
      '--admin-port',
      '0',
      '--scope-header',
      'x-tenant',
    ],
    { IDEMPO_ADMIN_TOKEN: TOKEN },
  );
  const line = gateway.logs.map((l) => JSON.parse(l)).find((l) => l.adminUrl);
  admin = line?.adminUrl ?? '';
  expect(admin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
}, 60_000);

afterAll(async () => {
  letGo();
  await browser?.close();
  gateway?.child.kill('SIGTERM');
  await gateway?.exited;
  upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the admin page in chromium', () => {
  it('shows live outcomes, records and top scopes, looks a key up and purges it so the retry runs', async () => {
    // Traffic the page should show: replays, a mismatch, a stored 4xx and a request in flight.
    const key = `pay-${randomUUID()}`;
    for (let i = 0; i < 3; i++) await postJson(`${gateway.url}/pay`, { amount: 5 }, key, { 'x-tenant': 'acme' });
    await postJson(`${gateway.url}/pay`, { amount: 6 }, key, { 'x-tenant': 'acme' });
    const rejected = `rej-${randomUUID()}`;
    expect((await postJson(`${gateway.url}/reject`, { amount: 1 }, rejected, { 'x-tenant': 'acme' })).status).toBe(422);
    const held = postJson(`${gateway.url}/hold`, { amount: 2 }, `hold-${randomUUID()}`, { 'x-tenant': 'globex' });

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${admin}/admin?every=1000`);
    // Without the token the key routes refuse, and the page says so.
    await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toBe('token needed');
    await page.fill('#token', TOKEN);
    await page.click('#token-form button');
    await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toMatch(/^updated /);

    // Records: the completed payment, the stored 422 and the held request in flight.
    await expect.poll(() => page.locator('#record-rows tr').count(), { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
    // biome-ignore lint/performance/useDomNodeTextContent: the text as a reader sees it, cells apart; textContent runs them together
    const rows = await page.locator('#record-rows').innerText();
    expect(rows).toMatch(/completed/);
    expect(rows).toMatch(/in flight/);
    expect(rows).toMatch(/422/);

    // Live figures need two polls; more traffic in between makes the rates move.
    for (let i = 0; i < 5; i++) await postJson(`${gateway.url}/pay`, { amount: 5 }, key, { 'x-tenant': 'acme' });
    await expect
      .poll(async () => Number(await page.locator('[data-outcome="replayed"] b').textContent()), { timeout: 10_000 })
      .toBeGreaterThan(0);
    expect(Number(await page.locator('[data-gauge="in-flight"] b').textContent())).toBe(1);
    // biome-ignore lint/performance/useDomNodeTextContent: the text as a reader sees it, cells apart; textContent runs them together
    const top = await page.locator('#top-rows').innerText();
    expect(top).toMatch(/mismatches\s+acme\s+1/);

    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, 'admin-overview.png'), fullPage: true });

    // Look up the stored 422 by the key the client sent, under its scope.
    await page.fill('#key', rejected);
    await page.fill('#scope', 'acme');
    await page.click('#key-form button[type="submit"]');
    await expect.poll(() => page.textContent('#key-result'), { timeout: 5_000 }).toMatch(/response 422/);
    expect(await page.textContent('#key-result')).toMatch(/"id":"pay_/);
    await page.screenshot({ path: join(SHOTS, 'admin-key.png'), fullPage: true });

    // Purge it: confirm the dialog, and the client's retry runs again instead of replaying.
    page.once('dialog', (dialog) => dialog.accept());
    await page.click('#purge');
    await expect.poll(() => page.textContent('#key-result'), { timeout: 5_000 }).toMatch(/^Purged/);
    const before = upstream.hits.filter((h) => h.url === '/reject').length;
    const retry = await postJson(`${gateway.url}/reject`, { amount: 1 }, rejected, { 'x-tenant': 'acme' });
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(upstream.hits.filter((h) => h.url === '/reject').length).toBe(before + 1);

    expect(errors).toEqual([]);
    letGo();
    await held;
    await page.close();
  }, 60_000);

  it('refuses the key routes without the right token, and keeps a key in flight unless forced', async () => {
    const wrong = await fetch(`${admin}/admin/api/records`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Bearer/);
    const key = `hold-${randomUUID()}`;
    const held = postJson(`${gateway.url}/hold`, { amount: 3 }, key);
    await sleep(300);
    const purge = (force: boolean) =>
      fetch(`${admin}/admin/api/purge`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ key, force }),
      });
    const refused = await purge(false);
    expect(refused.status).toBe(409);
    expect((await refused.json()).result).toBe('in_flight');
    expect((await (await purge(true)).json()).result).toBe('deleted');
    letGo();
    await held.then((r) => r.text()).catch(() => 'cut');
    const page = await fetch(`${admin}/admin`);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
  });

  it('reads the token from --admin-token-file, and refuses one too short to be a secret', () => {
    const file = join(dir, 'token');
    writeFileSync(file, 'short\n');
    const out = spawnSync(
      process.execPath,
      [CLI, 'serve', '--upstream', upstream.url, '--port', '0', '--admin-port', '0', '--admin-token-file', file],
      { cwd: ROOT, encoding: 'utf8', timeout: 20_000 },
    );
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(
      /^idempo: IDEMPO_CONFIG_INVALID: --admin-token-file: the admin token must be at least 16 characters \(got 5\)/,
    );
  });
});
