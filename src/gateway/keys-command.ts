/**
 * `idempo keys list|show|delete|reencrypt`: the operator's view of a store's records. Stores keep only the
 * hash of scope and key, so `show` and `delete` hash the key a client sent (with `--scope`, the
 * value of the gateway's `--scope-header`) exactly as the engine does; `--stored-key` takes a
 * hash as `list` prints it instead. With `--encryption-keys` (or `IDEMPO_ENCRYPTION_KEYS`) they read
 * an encrypted store's records opened; `reencrypt` moves completed records to the current key.
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { storeKeyFor } from '../engine/fingerprint.js';
import { encryptStore } from '../stores/encrypted.js';
import {
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  parseDuration,
  type RecordInfo,
  type RecordQuery,
  type RecordState,
} from '../vocabulary/index.js';
import { encryptionOptionsFrom } from './encryption-keys.js';
import { openStore } from './store-url.js';

const STATES: readonly RecordState[] = ['in_flight', 'completed', 'released'];
/** Most bytes of a body `show` prints as text. */
const BODY_PREVIEW_BYTES = 2_048;

interface StoreFlags {
  store: string;
  json?: boolean;
  encryptionKeys?: string;
}
interface KeyFlags extends StoreFlags {
  scope?: string;
  storedKey?: string;
}

/** The `keys` command with its three subcommands; `print` receives every line of output. */
export function keysCommand(print: (line: string) => void): Command {
  const keys = new Command('keys').description(
    "Look up, list and delete a store's records: what a key holds, keys stuck in flight, a stored 4xx a customer may retry.",
  );
  const storeOption = () =>
    new Option('--store <url>', 'the store: sqlite:PATH, redis://HOST:PORT, postgres://USER@HOST/DB')
      .env('IDEMPO_STORE')
      .makeOptionMandatory();
  const jsonOption = () => new Option('--json', 'print JSON instead of text');
  const encryptionOption = () =>
    new Option(
      '--encryption-keys <file>',
      "the gateway's key set file, to read an encrypted store (or IDEMPO_ENCRYPTION_KEYS: the set itself)",
    ).env('IDEMPO_ENCRYPTION_KEYS_FILE');
  const keyOptions = (command: Command) =>
    command
      .argument('[key]', 'the Idempotency-Key the client sent')
      .addOption(new Option('--scope <value>', 'the scope the key was sent under (the --scope-header value)'))
      .addOption(new Option('--stored-key <hash>', 'the record key as `keys list` prints it, instead of a client key'))
      .addOption(storeOption())
      .addOption(encryptionOption())
      .addOption(jsonOption());

  keys
    .command('list')
    .description('List records, a page at a time (in key order; on Redis in SCAN order).')
    .addOption(storeOption())
    .addOption(new Option('--state <state>', 'only records in this state').choices(STATES))
    .addOption(new Option('--older-than <duration>', 'only records created at least this long ago, e.g. 5m'))
    .addOption(new Option('--limit <n>', 'most records to print').default(100).argParser(positiveInteger))
    .addOption(encryptionOption())
    .addOption(jsonOption())
    .action(async (flags: StoreFlags & { state?: RecordState; olderThan?: string; limit: number }) => {
      await withStore(flags, 'list', async (store, list) => {
        const query: RecordQuery = {
          ...(flags.state === undefined ? {} : { state: flags.state }),
          ...(flags.olderThan === undefined ? {} : { olderThanMs: parseDuration(flags.olderThan, '--older-than') }),
        };
        const records: RecordInfo[] = [];
        let cursor: string | undefined;
        do {
          const page = await list.call(store, {
            ...query,
            limit: Math.min(1_000, flags.limit - records.length),
            ...(cursor === undefined ? {} : { cursor }),
          });
          records.push(...page.records);
          cursor = page.cursor;
        } while (cursor !== undefined && records.length < flags.limit);
        const more = cursor !== undefined;
        if (flags.json) {
          print(JSON.stringify({ records: records.map(jsonOf), more }));
          return;
        }
        const now = Date.now();
        for (const record of records) print(summaryOf(record, now));
        print(
          `${records.length} record${records.length === 1 ? '' : 's'}${more ? `; more remain (raise --limit)` : ''}.`,
        );
      });
    });

  keyOptions(
    keys.command('show').description('Show one record: state, lease, expiry, steps and the stored response.'),
  ).action(async (key: string | undefined, flags: KeyFlags) => {
    const storedKey = storedKeyOf(key, flags);
    await withStore(flags, 'inspect', async (store, inspect) => {
      const record = await inspect.call(store, storedKey);
      if (record === undefined) {
        if (flags.json) print(JSON.stringify({ record: null, key: storedKey }));
        else print(`No record under ${describeKey(key, flags, storedKey)}.`);
        process.exitCode = 1;
        return;
      }
      if (flags.json) print(JSON.stringify({ record: jsonOf(record) }));
      else for (const line of detailsOf(record, Date.now())) print(line);
    });
  });

  keyOptions(keys.command('delete').description('Delete a record so the next request with the key runs as new.'))
    .addOption(
      new Option('--force', 'also delete a record in flight (its owner is fenced out; a retry may run beside it)'),
    )
    .action(async (key: string | undefined, flags: KeyFlags & { force?: boolean }) => {
      const storedKey = storedKeyOf(key, flags);
      await withStore(flags, 'delete', async (store, remove) => {
        const result = await remove.call(store, storedKey, { force: flags.force === true });
        if (flags.json) print(JSON.stringify({ key: storedKey, result }));
        else if (result === 'deleted') print(`Deleted the record under ${describeKey(key, flags, storedKey)}.`);
        else if (result === 'absent') print(`No record under ${describeKey(key, flags, storedKey)}; nothing deleted.`);
        else
          print(
            `Not deleted: the record under ${describeKey(key, flags, storedKey)} is in flight with a live lease. Its request may still be running; --force deletes it anyway.`,
          );
        if (result === 'in_flight') process.exitCode = 1;
      });
    });

  keys
    .command('reencrypt')
    .description(
      'Move completed records sealed with an older encryption key to the current one (a compare-and-swap per record; safe while the gateway runs).',
    )
    .addOption(storeOption())
    .addOption(encryptionOption())
    .addOption(jsonOption())
    .action(async (flags: StoreFlags) => {
      const encryption = encryptionOptionsFrom(flags.encryptionKeys, process.env);
      if (encryption === undefined)
        throw new IdempotencyConfigInvalidError(
          'reencrypt needs the key set: --encryption-keys FILE (IDEMPO_ENCRYPTION_KEYS_FILE) or IDEMPO_ENCRYPTION_KEYS.',
        );
      const opened = await openStore(flags.store);
      try {
        const report = await encryptStore(opened.store, encryption).reencrypt();
        if (flags.json) {
          print(JSON.stringify(report));
        } else {
          print(
            `${report.examined} records examined: ${report.moved} moved to key ${JSON.stringify(encryption.currentKeyId)}, ${report.current} already under it, ${report.changed} changed meanwhile (left alone).`,
          );
          const byKey = Object.entries(report.byKeyId).map(([id, n]) => `${id}: ${n}`);
          if (byKey.length > 0) print(`Completed records by key: ${byKey.join(', ')}.`);
          if (report.withSteps > 0)
            print(
              `${report.withSteps} record${report.withSteps === 1 ? '' : 's'} in flight or released hold steps, which move only when they complete or expire: keep older keys until then.`,
            );
          for (const key of report.unreadable) print(`Unreadable (failed authentication): ${key}`);
        }
        if (report.unreadable.length > 0) process.exitCode = 1;
      } finally {
        await opened.close();
      }
    });

  return keys;
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer.');
  return n;
}

function storedKeyOf(key: string | undefined, flags: KeyFlags): string {
  if (flags.storedKey !== undefined) {
    if (key !== undefined || flags.scope !== undefined) {
      throw new IdempotencyConfigInvalidError(
        'give either a key (with --scope if it had one) or --stored-key, not both',
      );
    }
    return flags.storedKey;
  }
  if (key === undefined)
    throw new IdempotencyConfigInvalidError('give the Idempotency-Key, or --stored-key with a key from `keys list`');
  return storeKeyFor(key, flags.scope);
}

function describeKey(key: string | undefined, flags: KeyFlags, storedKey: string): string {
  if (key === undefined) return storedKey;
  return `key ${JSON.stringify(key)}${flags.scope === undefined ? '' : ` in scope ${JSON.stringify(flags.scope)}`} (${storedKey})`;
}

type Operation = 'list' | 'inspect' | 'delete';

/** Opens the store (wrapped to open sealed records when keys are given), hands its operation to `use`, and closes it. */
async function withStore<K extends Operation>(
  flags: StoreFlags,
  operation: K,
  use: (store: IdempotencyStore, method: NonNullable<IdempotencyStore[K]>) => Promise<void>,
): Promise<void> {
  const encryption = encryptionOptionsFrom(flags.encryptionKeys, process.env);
  const opened = await openStore(flags.store);
  try {
    const store = encryption === undefined ? opened.store : encryptStore(opened.store, encryption);
    const method = store[operation];
    if (typeof method !== 'function') {
      throw new IdempotencyConfigInvalidError(`${opened.description}: this store cannot ${operation} its records.`);
    }
    await use(store, method as NonNullable<IdempotencyStore[K]>);
  } finally {
    await opened.close();
  }
}

/** A record as JSON: times as ISO strings, the body as base64 (and as text when it is UTF-8). */
function jsonOf(record: RecordInfo): Record<string, unknown> {
  const { response, ...rest } = record;
  return {
    ...rest,
    ...(rest.createdAt === undefined ? {} : { createdAt: new Date(rest.createdAt).toISOString() }),
    ...(rest.leaseUntil === undefined ? {} : { leaseUntil: new Date(rest.leaseUntil).toISOString() }),
    expiresAt: new Date(rest.expiresAt).toISOString(),
    ...(response === undefined
      ? {}
      : {
          response: {
            status: response.status,
            headers: response.headers,
            bodyBase64: Buffer.from(response.body).toString('base64'),
            ...(textOf(response.body) === undefined ? {} : { bodyText: textOf(response.body) }),
          },
        }),
  };
}

function summaryOf(record: RecordInfo, now: number): string {
  const parts = [record.key, record.state.padEnd(9)];
  if (record.createdAt !== undefined) parts.push(`age ${span(now - record.createdAt)}`);
  if (record.leaseUntil !== undefined) {
    parts.push(record.leaseUntil > now ? `lease ${span(record.leaseUntil - now)} left` : 'lease passed');
  }
  if (record.response !== undefined) parts.push(`status ${record.response.status}`);
  parts.push(`expires in ${span(record.expiresAt - now)}`);
  return parts.join('  ');
}

function detailsOf(record: RecordInfo, now: number): string[] {
  const lines = [`key:      ${record.key}`, `state:    ${record.state}`];
  if (record.token !== undefined) lines.push(`token:    ${record.token}`);
  if (record.createdAt !== undefined) {
    lines.push(`created:  ${new Date(record.createdAt).toISOString()} (${span(now - record.createdAt)} ago)`);
  }
  if (record.leaseUntil !== undefined) {
    lines.push(
      `lease:    ${record.leaseUntil > now ? `${span(record.leaseUntil - now)} left` : `passed ${span(now - record.leaseUntil)} ago: the next request takes the key over`}`,
    );
  }
  lines.push(`expires:  ${new Date(record.expiresAt).toISOString()} (in ${span(record.expiresAt - now)})`);
  if (record.steps.length > 0) lines.push(`steps:    ${record.steps.join(', ')}`);
  if (record.response !== undefined) {
    const { status, headers, body } = record.response;
    lines.push(`response: ${status}`);
    for (const [name, value] of headers) lines.push(`  ${name}: ${value}`);
    const text = textOf(body);
    if (text === undefined) lines.push(`  (${body.byteLength} bytes, not text)`);
    else if (body.byteLength > BODY_PREVIEW_BYTES) {
      lines.push(`  ${text.slice(0, BODY_PREVIEW_BYTES)}…`, `  (${body.byteLength} bytes; --json prints all)`);
    } else if (text !== '') lines.push(`  ${text}`);
  }
  return lines;
}

/** The body as text when it is valid UTF-8 without control characters other than whitespace. */
function textOf(body: Uint8Array): string | undefined {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(body);
    // Control characters other than tab, newline and carriage return mean bytes, not text.
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code < 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) return undefined;
    }
    return text;
  } catch {
    return undefined;
  }
}

/** A duration for people: 850ms, 12s, 5m 3s, 2h 10m, 3d 4h. */
function span(ms: number): string {
  const abs = Math.max(0, Math.round(ms));
  if (abs < 1_000) return `${abs}ms`;
  const s = Math.floor(abs / 1_000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}
