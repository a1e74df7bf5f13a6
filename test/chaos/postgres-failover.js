// Failover chaos on PostgreSQL: a private primary with one streaming standby (pg_basebackup -R),
// the apps connected through an endpoint the harness owns, and the fault that makes the standby
// take over. Every server goes through procs.js, so cleanupAll ends them all.
//
// The endpoint. node-postgres takes one host, not libpq's `host=a,b target_session_attrs=read-write`,
// so the apps reach "the primary" through a TCP forwarder in the harness, which the fault re-points
// at the promoted standby: the stand-in for what a deployment puts there (a floating IP, a
// PgBouncer or HAProxy whose backend a Patroni-style manager switches, a DNS name). Like those, it
// forwards to a crashed primary until it is told otherwise, so connections are refused (at once,
// on loopback) from the crash until the promotion.
//
// The replication link. On loopback a standby receives the WAL microseconds after the primary
// writes it, so an asynchronous standby would miss almost nothing at a crash, and a synchronous
// one would cost almost nothing: neither is what a deployment sees. So the standby streams through
// a second forwarder that delays each direction by `replicationDelayMs`, a standby at network
// distance (or one a busy primary keeps behind): that much WAL is on its way when the primary
// crashes, and is lost with it; a synchronous commit waits a round trip of the link.
//
// The fault ('promote'), one per call:
// 1. crash the primary: its replication link cut (what it still held dropped) and every process
//    of it SIGSTOPped, then SIGKILLed (procs.js crash()), as when its machine dies; it does not
//    come back in the run;
// 2. after `promoteAfterMs` (the failure detector's delay), `pg_ctl promote` the standby;
// 3. read the promoted standby's records (what the new primary starts with; nothing writes to it
//    yet), then re-point the endpoint at it;
// 4. rebuild a standby from the new primary (pg_basebackup, a fresh directory: the old primary
//    re-imaged) and, with `synchronous`, name it in the new primary's synchronous_standby_names
//    and wait until it is synchronous. The harness starts no fault before this has finished.
//
// Between 3 and 4 the new primary has no standby: with `synchronous` it commits alone (as
// Patroni's synchronous_mode does without synchronous_mode_strict) rather than refusing every
// write until a new standby exists. A crash in that gap could lose writes; this harness never
// crashes it there.
//
// The evidence. After the run, lostWrites() starts each crashed primary's data directory again
// (crash recovery replays what its WAL had, which the crash left in the page cache), reads its
// records and compares them with what its promoted standby started with: a claim, a step or a
// completion on the crashed primary and not on the promoted standby was lost at the promotion.
// Some of those were never acknowledged (their commit was in flight at the crash), so a lost
// write is not a bug by itself; a duplicate that follows one is what the control run shows.
import { rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, HOST, pgBin, postgresTempDir, servePostgres, sleep, startPostgres } from './procs.js';

/** One statement on a fresh connection to the server on `port`; its rows. */
async function query(port, text, values = []) {
  const client = new pg.Client({
    host: HOST,
    port,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 5_000,
  });
  client.on('error', () => {});
  await client.connect();
  try {
    return (await client.query(text, values)).rows;
  } finally {
    await client.end().catch(() => {});
  }
}

async function until(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * A TCP forwarder on a free port to whichever server `point()` last named, each direction delayed
 * by `delayMs` (0: piped as it comes). A connection to a server that died ends both sides;
 * re-pointing ends every connection to the old target, as a switched pooler or a moved IP does;
 * `cut()` ends every connection at once and drops what the delay still held (never delivered).
 */
export async function startForwarder(targetPort, { delayMs = 0 } = {}) {
  let target = targetPort;
  const pairs = new Set();
  const relay = (from, to, pair) => {
    if (delayMs === 0) {
      from.pipe(to);
      return;
    }
    // Timers of one duration fire in the order they were set, so the bytes keep their order.
    from.on('data', (chunk) => {
      const timer = setTimeout(() => {
        pair.timers.delete(timer);
        if (!to.destroyed) to.write(chunk);
      }, delayMs);
      pair.timers.add(timer);
    });
  };
  const server = net.createServer((client) => {
    const upstream = net.createConnection({ host: HOST, port: target });
    const pair = { client, upstream, target, timers: new Set() };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      // What the delay still holds was on its way; an end that is not a cut lets it arrive first.
      const destroy = () => {
        client.destroy();
        upstream.destroy();
      };
      if (pair.timers.size === 0) destroy();
      else setTimeout(destroy, delayMs + 1);
    };
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    relay(client, upstream, pair);
    relay(upstream, client, pair);
  });
  const port = await freePort();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, resolve);
  });
  return {
    port,
    point(next) {
      target = next;
      for (const pair of pairs) if (pair.target !== next) pair.client.destroy();
    },
    cut() {
      for (const pair of pairs) {
        for (const timer of pair.timers) clearTimeout(timer);
        pair.timers.clear();
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
    },
    close() {
      for (const pair of pairs) {
        for (const timer of pair.timers) clearTimeout(timer);
        pair.client.destroy();
        pair.upstream.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Every record, as much of it as says which writes it has seen. */
async function records(port) {
  const rows = await query(
    port,
    `SELECT key, state, token::text AS token, claim_id::text AS claim_id,
            ARRAY(SELECT k FROM jsonb_object_keys(steps) AS k ORDER BY k) AS steps
       FROM idempo_keys`,
  );
  return new Map(rows.map((row) => [row.key, row]));
}

/**
 * What the crashed primary's record of a key has that the promoted standby's lacks ('claim',
 * 'step', 'completion', 'release', joined with ' and '), or null: a claim when the standby has
 * another claim of the key or none; a step it has no result of; a completion or release it lacks.
 */
function lostWrite(crashed, promoted) {
  const lost = [];
  const sameClaim = promoted && promoted.token === crashed.token && promoted.claim_id === crashed.claim_id;
  if (!sameClaim) lost.push('claim');
  if (crashed.steps.some((name) => !(promoted?.steps ?? []).includes(name))) lost.push('step');
  if (crashed.state !== 'in_flight' && (!sameClaim || promoted.state !== crashed.state)) {
    // A completion clears the steps, so the crashed record no longer says whether its step was
    // lost too; the standby's record says whether a re-run will find the step's result.
    if (crashed.state === 'completed' && sameClaim && promoted.steps.length === 0)
      lost.push('completion (no step result on the standby)');
    else lost.push(crashed.state === 'completed' ? 'completion' : 'release');
  }
  return lost.length === 0 ? null : lost.join(' and ');
}

/**
 * Starts a primary (migrated by `migrate(url)`) and one streaming standby, the endpoint in front.
 * @param {{ synchronous: boolean, migrate: (url: string) => Promise<unknown>, replicationDelayMs?: number }} options
 */
export async function startPostgresFailover({ synchronous, migrate, replicationDelayMs = 0 }) {
  let standbys = 0;
  let primary = await startPostgres();
  // The table comes from an explicit migration, as in production; the standby copies it.
  await migrate(primary.url);
  /** The replication link of the current standby (see the top of this file). */
  let link;

  async function buildStandby(of) {
    const name = `standby${++standbys}`;
    const dir = await postgresTempDir(`idempo-chaos-pg-${name}-`);
    const data = join(dir, 'data');
    link = await startForwarder(of.port, { delayMs: replicationDelayMs });
    // -R writes this conninfo as the standby's primary_conninfo: it streams through the link.
    const conninfo = `host=${HOST} port=${link.port} user=postgres application_name=${name}`;
    await pgBin('pg_basebackup', ['-D', data, '-d', conninfo, '-R', '-X', 'stream', '-c', 'fast', '--no-sync']);
    const standby = Object.assign(servePostgres(dir, data, await freePort()), { name });
    await standby.start();
    await until(`${name} streaming from ${of.port}`, async () => {
      const rows = await query(of.port, 'SELECT state FROM pg_stat_replication WHERE application_name = $1', [name]);
      return rows[0]?.state === 'streaming';
    });
    if (synchronous) {
      // The primary waits for this standby's flush at commit from now on (for the store's 'on').
      await query(of.port, `ALTER SYSTEM SET synchronous_standby_names = '"${name}"'`);
      await query(of.port, 'SELECT pg_reload_conf()');
      await until(`${name} synchronous`, async () => {
        const rows = await query(of.port, 'SELECT sync_state FROM pg_stat_replication WHERE application_name = $1', [
          name,
        ]);
        return rows[0]?.sync_state === 'sync';
      });
    }
    return standby;
  }

  let standby = await buildStandby(primary);
  const endpoint = await startForwarder(primary.port);
  const links = [link];
  /** Each crashed primary with what its promoted standby started with. */
  const crashed = [];

  return {
    kind: 'postgres-failover',
    url: `postgres://postgres@${HOST}:${endpoint.port}/postgres`,
    running: true,
    outages: true,
    /**
     * Crashes the primary and promotes the standby (see the top of this file); resolves with the
     * fault's times: `start` (the crash), `promotedAt` (the standby accepts writes), `released`
     * (the endpoint points at it), `end` (a new standby streams, and is synchronous if asked).
     */
    async fault(kind, _random, { promoteAfterMs = 1_500 } = {}) {
      if (kind !== 'promote') throw new Error(`unknown PostgreSQL fault ${kind}`);
      const event = {
        kind,
        primary: primary.port,
        standby: standby.port,
        start: Date.now(),
        promotedAt: null,
        released: null,
        end: null,
      };
      const old = primary;
      // The machine goes, and its network with it: the WAL still on its way to the standby is
      // lost with the primary. No turn of the event loop between the cut and the crash's signals.
      link.cut();
      await old.crash();
      await sleep(promoteAfterMs);
      await pgBin('pg_ctl', ['-D', standby.data, '-w', '-t', '60', 'promote']);
      await until('promoted standby out of recovery', async () => {
        const rows = await query(standby.port, 'SELECT pg_is_in_recovery() AS r');
        return rows[0]?.r === false;
      });
      event.promotedAt = Date.now();
      crashed.push({ server: old, event, promoted: await records(standby.port) });
      primary = standby;
      endpoint.point(primary.port);
      event.released = Date.now();
      standby = await buildStandby(primary);
      links.push(link);
      event.end = Date.now();
      return event;
    },
    /**
     * After the run: per fault, the store keys whose claim, step or completion the crashed
     * primary had and its promoted standby did not (see the top of this file).
     * @returns {Promise<{ fault: number, t: number, key: string, what: string }[]>}
     */
    async lostWrites() {
      const lost = [];
      for (const [index, { server, event, promoted }] of crashed.entries()) {
        // The crash left its lock file; nothing of it runs, so a reused pid must not stop the start.
        rmSync(join(server.data, 'postmaster.pid'), { force: true });
        const again = servePostgres(server.dir, server.data, await freePort());
        await again.start();
        try {
          for (const [key, row] of await records(again.port)) {
            const what = lostWrite(row, promoted.get(key));
            if (what) lost.push({ fault: index, t: event.start, key, what });
          }
        } finally {
          await again.stopHard().catch(() => {});
        }
      }
      return lost;
    },
    async close() {
      await Promise.all([endpoint.close(), ...links.map((l) => l.close())]);
    },
  };
}
