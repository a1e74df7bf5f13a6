/**
 * The admin page (`GET /admin` on the admin listener) and the key routes it calls: recent
 * records with their state and age, a record's details, and purging a key. The routes that read
 * or delete records need `Authorization: Bearer <token>` (the `--admin-token-file` or
 * `IDEMPO_ADMIN_TOKEN` token): records hold responses, and a purge lets a request run again.
 * Without a token they answer `403` saying how to set one. The page itself is a static shell that
 * asks for the token and keeps it in the tab's session storage; its live figures come from
 * `GET /metrics` and `GET /usage`.
 *
 * @module
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { storeKeyFor } from '../engine/fingerprint.js';
import {
  type IdempotencyStore,
  parseDuration,
  type RecordInfo,
  type RecordQuery,
  type RecordState,
} from '../vocabulary/index.js';
import { type AdminRoute, sendJson } from './admin.js';

/** What the page's routes need. */
export interface AdminPageOptions {
  /** The gateway's store, as opened (with `inspect`, `list` and `delete`). */
  store: IdempotencyStore;
  /** The bearer token the key routes require; `undefined` turns them off (403). */
  token: string | undefined;
  /** Whether `/metrics` and `/usage` exist, so the page shows live figures. */
  live: boolean;
}

const STATES: readonly RecordState[] = ['in_flight', 'completed', 'released'];
/** Most bytes of a stored body the details route returns as text. */
const BODY_PREVIEW_BYTES = 4_096;
/** Largest JSON body the purge route reads. */
const MAX_BODY_BYTES = 16_384;

/** The admin page and its key routes. */
export function adminPageRoutes({ store, token, live }: AdminPageOptions): AdminRoute[] {
  const expected = token === undefined ? undefined : Buffer.from(`Bearer ${token}`);

  /** Answers 401/403 and returns false unless the request carries the token. */
  function authorized(req: IncomingMessage, res: ServerResponse): boolean {
    if (expected === undefined) {
      sendJson(res, 403, {
        error: 'The key routes are off: start the gateway with IDEMPO_ADMIN_TOKEN or --admin-token-file to use them.',
      });
      return false;
    }
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      res.setHeader('www-authenticate', 'Bearer realm="idempo admin"');
      sendJson(res, 401, { error: 'A valid admin token is needed: Authorization: Bearer <token>.' });
      return false;
    }
    return true;
  }

  function keyOf(params: { key?: unknown; scope?: unknown; storedKey?: unknown }): string | undefined {
    if (typeof params.storedKey === 'string' && params.storedKey !== '') return params.storedKey;
    if (typeof params.key !== 'string' || params.key === '') return undefined;
    return storeKeyFor(params.key, typeof params.scope === 'string' && params.scope !== '' ? params.scope : undefined);
  }

  return [
    {
      method: 'GET',
      path: '/admin',
      description: 'the admin page (its key routes need the admin token)',
      handle: (_req, res) => {
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'cache-control': 'no-store',
          // Everything the page runs is in it; it talks only to this listener.
          'content-security-policy':
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
          'x-frame-options': 'DENY',
          'referrer-policy': 'no-referrer',
        });
        res.end(pageHtml(live, token !== undefined));
      },
    },
    {
      method: 'GET',
      path: '/admin/api/records',
      description: 'recent records (?state=in_flight|completed|released, ?olderThan=5m, ?limit=50); token',
      handle: async (req, res, url) => {
        if (!authorized(req, res)) return;
        const state = url.searchParams.get('state');
        const olderThan = url.searchParams.get('olderThan');
        const limit = Math.min(500, Math.max(1, Number(url.searchParams.get('limit')) || 50));
        if (state !== null && state !== '' && !STATES.includes(state as RecordState)) {
          sendJson(res, 400, { error: `state: expected one of ${STATES.join(', ')}` });
          return;
        }
        if (!store.list) {
          sendJson(res, 501, { error: 'This store cannot list its records.' });
          return;
        }
        const query: RecordQuery = {
          limit,
          ...(state ? { state: state as RecordState } : {}),
          ...(olderThan ? { olderThanMs: parseDuration(olderThan, 'olderThan') } : {}),
        };
        const page = await store.list(query);
        const now = Date.now();
        sendJson(res, 200, { now, more: page.cursor !== undefined, records: page.records.map((r) => summary(r)) });
      },
    },
    {
      method: 'GET',
      path: '/admin/api/record',
      description: 'one record (?key=…&scope=… or ?storedKey=…); token',
      handle: async (req, res, url) => {
        if (!authorized(req, res)) return;
        const key = keyOf(Object.fromEntries(url.searchParams));
        if (key === undefined) {
          sendJson(res, 400, { error: 'Give key (with scope if it had one) or storedKey.' });
          return;
        }
        const record = await store.inspect?.(key);
        if (record === undefined) {
          sendJson(res, 404, { storedKey: key, error: 'No record under this key.' });
          return;
        }
        sendJson(res, 200, { now: Date.now(), record: details(record) });
      },
    },
    {
      method: 'POST',
      path: '/admin/api/purge',
      description: 'delete a record so its key runs again (JSON {key, scope} or {storedKey}, force); token',
      handle: async (req, res) => {
        if (!authorized(req, res)) return;
        let params: Record<string, unknown>;
        try {
          params = JSON.parse((await readBody(req)).toString('utf8')) as Record<string, unknown>;
        } catch {
          sendJson(res, 400, { error: 'Send a JSON object: {"key": "…", "scope": "…"} or {"storedKey": "…"}.' });
          return;
        }
        const key = keyOf(params ?? {});
        if (key === undefined || !store.delete) {
          sendJson(res, 400, { error: 'Give key (with scope if it had one) or storedKey.' });
          return;
        }
        const result = await store.delete(key, { force: params.force === true });
        sendJson(res, result === 'in_flight' ? 409 : 200, { storedKey: key, result });
      },
    },
  ];
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function summary(record: RecordInfo) {
  return {
    storedKey: record.key,
    state: record.state,
    createdAt: record.createdAt ?? null,
    leaseUntil: record.leaseUntil ?? null,
    expiresAt: record.expiresAt,
    status: record.response?.status ?? null,
    steps: record.steps.length,
  };
}

function details(record: RecordInfo) {
  const body = record.response?.body;
  let text: string | null = null;
  if (body !== undefined) {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(body.subarray(0, BODY_PREVIEW_BYTES));
    } catch {
      text = null;
    }
  }
  return {
    ...summary(record),
    token: record.token ?? null,
    steps: record.steps,
    response:
      record.response === undefined
        ? null
        : { status: record.response.status, headers: record.response.headers, bytes: body?.byteLength ?? 0, text },
  };
}

/** The page: one HTML document with its style and script, no build step and nothing fetched from elsewhere. */
function pageHtml(live: boolean, keyRoutes: boolean): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>idempo admin</title>
<style>
  :root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f8f9fb; --accent:#2f5bd3; --bad:#c0362c; --ok:#1e7f4f; --warn:#b7791f; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:center; gap:16px; padding:12px 24px; background:#fff; border-bottom:1px solid var(--line); }
  header h1 { font-size:16px; margin:0; }
  header .status { color:var(--muted); margin-left:auto; }
  main { padding:20px 24px; display:grid; gap:20px; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
  section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size:14px; margin:0 0 12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { color:var(--muted); font-weight:600; font-size:12px; }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
  code { font:12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; word-break:break-all; }
  .tiles { display:grid; grid-template-columns: repeat(auto-fit, minmax(120px, 1fr)); gap:12px; }
  .tile { border:1px solid var(--line); border-radius:6px; padding:10px; }
  .tile b { display:block; font-size:22px; font-variant-numeric: tabular-nums; }
  .tile span { color:var(--muted); font-size:12px; }
  .state { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; }
  .state.in_flight { background:#fff4e0; color:var(--warn); }
  .state.completed { background:#e7f6ee; color:var(--ok); }
  .state.released { background:#eef1f6; color:var(--muted); }
  form { display:flex; flex-wrap:wrap; gap:8px; align-items:center; }
  input, select, button { font:inherit; padding:6px 10px; border:1px solid var(--line); border-radius:6px; background:#fff; }
  button { background:var(--accent); color:#fff; border-color:var(--accent); cursor:pointer; }
  button.danger { background:var(--bad); border-color:var(--bad); }
  button.plain { background:#fff; color:var(--fg); }
  .muted { color:var(--muted); }
  .error { color:var(--bad); }
  pre { background:var(--bg); padding:8px; border-radius:6px; max-height:240px; overflow:auto; white-space:pre-wrap; }
</style>
</head>
<body>
<header>
  <h1>idempo admin</h1>
  <form id="token-form" aria-label="admin token">
    <input id="token" type="password" placeholder="admin token" autocomplete="off" size="24">
    <button type="submit" class="plain">Use token</button>
  </form>
  <span class="status" id="status">starting…</span>
</header>
<main>
  <section class="wide" id="live">
    <h2>Live</h2>
    <div class="tiles" id="tiles"><span class="muted">${live ? 'waiting for the first figures…' : 'metrics are off'}</span></div>
  </section>
  <section id="top">
    <h2>Top scopes</h2>
    <table><thead><tr><th>counter</th><th>scope</th><th class="num">count</th></tr></thead><tbody id="top-rows"><tr><td colspan="3" class="muted">–</td></tr></tbody></table>
  </section>
  <section id="lookup">
    <h2>Look up or purge a key</h2>
    <form id="key-form">
      <input id="key" placeholder="Idempotency-Key" size="28" required>
      <input id="scope" placeholder="scope (if any)" size="14">
      <button type="submit">Show</button>
      <button type="button" class="danger" id="purge">Purge</button>
      <label class="muted"><input type="checkbox" id="force"> even in flight</label>
    </form>
    <div id="key-result" class="muted" style="margin-top:12px">${keyRoutes ? 'Give a key the client sent.' : 'Key routes are off: start the gateway with IDEMPO_ADMIN_TOKEN.'}</div>
  </section>
  <section class="wide" id="records">
    <h2>Recent records</h2>
    <form id="filter-form">
      <select id="state"><option value="">any state</option><option value="in_flight">in flight</option><option value="completed">completed</option><option value="released">released</option></select>
      <input id="older" placeholder="older than, e.g. 5m" size="16">
      <button type="submit" class="plain">Refresh</button>
    </form>
    <table style="margin-top:10px"><thead><tr><th>stored key</th><th>state</th><th class="num">age</th><th class="num">lease</th><th class="num">status</th><th class="num">expires in</th><th></th></tr></thead>
    <tbody id="record-rows"><tr><td colspan="7" class="muted">–</td></tr></tbody></table>
  </section>
</main>
<script>
'use strict';
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('idempo-admin-token') || '';
const auth = () => (token ? { authorization: 'Bearer ' + token } : {});
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
function span(ms) {
  if (ms === null || ms === undefined) return '–';
  const a = Math.max(0, Math.round(ms));
  if (a < 1000) return a + ' ms';
  const s = Math.floor(a / 1000); if (s < 60) return s + ' s';
  const m = Math.floor(s / 60); if (m < 60) return m + ' min';
  const h = Math.floor(m / 60); return h < 48 ? h + ' h' : Math.floor(h / 24) + ' d';
}
function setStatus(text, bad) { $('status').textContent = text; $('status').className = 'status' + (bad ? ' error' : ''); }

// Prometheus text: sums of each family's samples, histograms as sum/count, plus one label split.
function parseMetrics(text) {
  const out = { total: {}, byType: {}, sum: {}, count: {} };
  for (const line of text.split('\\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\\w:]*)(\\{[^}]*\\})? ([^ ]+)/.exec(line);
    if (!m) continue;
    const [, name, labels = '', raw] = m;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    if (name.endsWith('_sum')) out.sum[name.slice(0, -4)] = (out.sum[name.slice(0, -4)] || 0) + value;
    else if (name.endsWith('_count')) out.count[name.slice(0, -6)] = (out.count[name.slice(0, -6)] || 0) + value;
    else out.total[name] = (out.total[name] || 0) + value;
    const type = /type="([^"]*)"/.exec(labels);
    if (type && name === 'idempo_outcomes_total') out.byType[type[1]] = (out.byType[type[1]] || 0) + value;
  }
  return out;
}
let previous;
async function refreshLive() {
  ${
    live
      ? `const res = await fetch('/metrics');
  if (!res.ok) throw new Error('metrics: ' + res.status);
  const now = parseMetrics(await res.text());
  const at = Date.now();
  const tiles = [];
  const rate = (a, b) => (previous ? ((a || 0) - (b || 0)) / ((at - previous.at) / 1000) : null);
  for (const type of ['executed', 'replayed', 'conflict', 'mismatch', 'released', 'store_error']) {
    const r = previous ? rate(now.byType[type], previous.m.byType[type]) : null;
    tiles.push('<div class="tile" data-outcome="' + type + '"><b>' + (r === null ? '–' : r.toFixed(1)) + '</b><span>' + type.replace('_', ' ') + ' / s</span></div>');
  }
  const key = 'idempo_request_duration_seconds';
  const dc = previous ? (now.count[key] || 0) - (previous.m.count[key] || 0) : 0;
  const ds = previous ? (now.sum[key] || 0) - (previous.m.sum[key] || 0) : 0;
  tiles.push('<div class="tile"><b>' + (dc > 0 ? ((ds / dc) * 1000).toFixed(1) + ' ms' : '–') + '</b><span>mean latency</span></div>');
  tiles.push('<div class="tile" data-gauge="in-flight"><b>' + (now.total.idempo_keys_in_flight || 0) + '</b><span>keys in flight</span></div>');
  $('tiles').innerHTML = tiles.join('');
  previous = { at, m: now };
  const usage = await (await fetch('/usage?n=5')).json();
  const rows = [];
  for (const counter of ['mismatches', 'conflicts', 'new_keys']) {
    for (const item of (usage.counters[counter] || { top: [] }).top) rows.push('<tr><td>' + esc(counter) + '</td><td><code>' + esc(item.scope) + '</code></td><td class="num">' + item.count + '</td></tr>');
  }
  $('top-rows').innerHTML = rows.join('') || '<tr><td colspan="3" class="muted">nothing in the window</td></tr>';`
      : ''
  }
}
async function refreshRecords() {
  const params = new URLSearchParams({ limit: '50' });
  if ($('state').value) params.set('state', $('state').value);
  if ($('older').value.trim()) params.set('olderThan', $('older').value.trim());
  const res = await fetch('/admin/api/records?' + params, { headers: auth() });
  const body = await res.json();
  if (!res.ok) { $('record-rows').innerHTML = '<tr><td colspan="7" class="error">' + esc(body.error) + '</td></tr>'; return false; }
  $('record-rows').innerHTML = body.records.map((r) =>
    '<tr data-key="' + esc(r.storedKey) + '"><td><code>' + esc(r.storedKey) + '</code></td><td><span class="state ' + r.state + '">' + r.state.replace('_', ' ') +
    '</span></td><td class="num">' + span(r.createdAt === null ? null : body.now - r.createdAt) + '</td><td class="num">' +
    (r.leaseUntil === null ? '–' : r.leaseUntil > body.now ? span(r.leaseUntil - body.now) + ' left' : 'passed') + '</td><td class="num">' + (r.status ?? '–') +
    '</td><td class="num">' + span(r.expiresAt - body.now) + '</td><td><button class="plain" data-show="' + esc(r.storedKey) + '">details</button></td></tr>').join('') +
    (body.records.length === 0 ? '<tr><td colspan="7" class="muted">no records</td></tr>' : '');
  return true;
}
function renderRecord(body) {
  const r = body.record;
  const lines = ['<div><span class="state ' + r.state + '">' + r.state.replace('_', ' ') + '</span> <code>' + esc(r.storedKey) + '</code></div>',
    '<div class="muted">age ' + span(r.createdAt === null ? null : body.now - r.createdAt) + ', expires in ' + span(r.expiresAt - body.now) + (r.steps.length ? ', steps: ' + esc(r.steps.join(', ')) : '') + '</div>'];
  if (r.response) lines.push('<div>response <b>' + r.response.status + '</b> (' + r.response.bytes + ' bytes)</div><pre>' + esc(r.response.text ?? '(not text)') + '</pre>');
  $('key-result').innerHTML = lines.join('');
}
async function show(params) {
  const res = await fetch('/admin/api/record?' + new URLSearchParams(params), { headers: auth() });
  const body = await res.json();
  if (res.ok) renderRecord(body);
  else $('key-result').innerHTML = '<span class="' + (res.status === 404 ? 'muted' : 'error') + '">' + esc(body.error) + '</span>';
}
$('key-form').addEventListener('submit', (e) => { e.preventDefault(); show({ key: $('key').value, scope: $('scope').value }); });
$('purge').addEventListener('click', async () => {
  if (!$('key').value) return;
  if (!confirm('Purge this key? The next request with it runs again.')) return;
  const res = await fetch('/admin/api/purge', { method: 'POST', headers: { 'content-type': 'application/json', ...auth() },
    body: JSON.stringify({ key: $('key').value, scope: $('scope').value, force: $('force').checked }) });
  const body = await res.json();
  $('key-result').innerHTML = res.ok
    ? (body.result === 'deleted' ? '<span>Purged: the next request with this key runs as new.</span>' : '<span class="muted">No record under this key.</span>')
    : '<span class="error">' + esc(body.error ?? 'Refused: the key is in flight; tick "even in flight" to purge it anyway.') + '</span>';
  refreshRecords().catch(() => {});
});
$('record-rows').addEventListener('click', (e) => { const key = e.target.getAttribute && e.target.getAttribute('data-show'); if (key) show({ storedKey: key }); });
$('filter-form').addEventListener('submit', (e) => { e.preventDefault(); refreshRecords().catch((err) => setStatus(err.message, true)); });
$('token-form').addEventListener('submit', (e) => { e.preventDefault(); token = $('token').value; sessionStorage.setItem('idempo-admin-token', token); tick(); });
async function tick() {
  try {
    await refreshLive();
    const ok = await refreshRecords();
    setStatus(ok ? 'updated ' + new Date().toLocaleTimeString() : 'token needed', !ok);
  } catch (err) { setStatus(err.message, true); }
}
// ?every=2000 refreshes more often (ms); five seconds otherwise.
const every = Math.max(500, Number(new URLSearchParams(location.search).get('every')) || 5000);
tick();
setInterval(tick, every);
</script>
</body>
</html>`;
}
