#!/usr/bin/env node
/**
 * The `idempo` command: `idempo serve` runs the gateway, `idempo migrate` prepares a store,
 * `idempo keys` looks into one.
 * Every flag has an environment-variable twin, so containers can be configured without flags.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { IDEMPOTENCY_DEFAULTS, LIMIT_DEFAULTS } from '../engine/defaults.js';
import type { LimitOptions } from '../engine/types.js';
import { type Duration, IdempotencyConfigInvalidError, IdempotencyError, parseDuration } from '../vocabulary/index.js';
import { GATEWAY_DEFAULTS } from './defaults.js';
import { encryptionOptionsFrom } from './encryption-keys.js';
import { keysCommand } from './keys-command.js';
import { checkLevel, createGatewayLogger, LOG_LEVELS, settleLogs } from './log.js';
import { redact } from './opened-store.js';
import { startGateway } from './server.js';
import { stopOnSignals } from './shutdown.js';
import { signatureOptionsFrom } from './signature-keys.js';
import { openStore } from './store-url.js';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function port(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < 0 || n > 65_535)
    throw new InvalidArgumentError('expected a port number from 0 to 65535.');
  return n;
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

function methodList(value: string): string[] {
  const methods = list(value).map((m) => m.toUpperCase());
  const bad = methods.find((m) => !/^[A-Z]+$/.test(m));
  if (methods.length === 0 || bad !== undefined)
    throw new InvalidArgumentError(
      `expected HTTP methods separated by commas, e.g. POST,PATCH${bad ? `; got ${JSON.stringify(bad)}` : ''}.`,
    );
  return methods;
}

/** A duration flag: `30s`, `500ms`, `24h`; a bare number is refused, since its unit would be a guess. */
function duration(value: string): string {
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed))
    throw new InvalidArgumentError(
      `"${trimmed}" has no unit: write e.g. ${trimmed}s or ${trimmed}ms (units: ms, s, m, h, d).`,
    );
  try {
    parseDuration(trimmed, 'duration');
  } catch {
    throw new InvalidArgumentError('expected a duration such as 500ms, 30s, 5m or 24h.');
  }
  return trimmed;
}

/** A duration that `0` turns off. */
function durationOrOff(value: string): string | 0 {
  return value.trim() === '0' ? 0 : duration(value);
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1_024, kib: 1_024, mb: 1_048_576, mib: 1_048_576 };

/** A byte count: `1048576`, `64kb`, `10mb` (binary units). */
function bytes(value: string): number {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(value.trim());
  const unit = SIZE_UNITS[match?.[2]?.toLowerCase() ?? 'x'];
  const n = match && unit !== undefined ? Number(match[1]) * unit : Number.NaN;
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError('expected a positive number of bytes, e.g. 1048576, 512kb or 10mb.');
  return n;
}

function positiveCount(value: string): number {
  const n = Number(value.trim());
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError('expected a positive whole number, e.g. 20.');
  return n;
}

/** `--limit-new-keys 600/1m`: at most 600 new keys per scope within any minute. */
function perWindow(value: string): string {
  const [max, window, extra] = value.trim().split('/');
  if (max === undefined || window === undefined || extra !== undefined)
    throw new InvalidArgumentError('expected new keys per window, e.g. 600/1m.');
  positiveCount(max);
  duration(window);
  return value.trim();
}

/**
 * `limits` from `--limit-in-flight`, `--limit-new-keys` and `--limit-scopes` (a config file's
 * values too, which no argument parser has seen); `undefined` when none is set.
 */
function limitsFrom(flags: Record<string, unknown>): LimitOptions | undefined {
  const asText = (value: unknown) => (typeof value === 'number' ? String(value) : (value as string));
  const inFlight = flags.limitInFlight === undefined ? undefined : positiveCount(asText(flags.limitInFlight));
  const newKeys = flags.limitNewKeys === undefined ? undefined : perWindow(asText(flags.limitNewKeys)).split('/');
  if (inFlight === undefined && newKeys === undefined) {
    if (flags.limitScopes !== undefined)
      throw new IdempotencyConfigInvalidError('--limit-scopes needs --limit-in-flight or --limit-new-keys.');
    return undefined;
  }
  return {
    ...(inFlight === undefined ? {} : { inFlight }),
    ...(newKeys === undefined ? {} : { newKeys: { max: Number(newKeys[0]), window: newKeys[1] as Duration } }),
    ...(flags.limitScopes === undefined ? {} : { maxScopes: positiveCount(asText(flags.limitScopes)) }),
  };
}

/** `--release-on 5xx,429`, or `none` for Stripe's rule (every answer kept). */
function releaseOn(value: string): (number | `${1 | 2 | 3 | 4 | 5}xx`)[] {
  const items = list(value);
  if (items.length === 1 && items[0]?.toLowerCase() === 'none') return [];
  if (items.length === 0) throw new InvalidArgumentError('expected statuses or classes like 5xx,429, or none.');
  return items.map((item) => {
    if (/^[1-5]xx$/i.test(item)) return item.toLowerCase() as `${1 | 2 | 3 | 4 | 5}xx`;
    const n = Number(item);
    if (Number.isInteger(n) && n >= 100 && n <= 599) return n;
    throw new InvalidArgumentError(`expected statuses or classes like 5xx,429, or none; got ${JSON.stringify(item)}.`);
  });
}

function mismatchStatus(value: string): 400 | 422 {
  if (value.trim() === '400') return 400;
  if (value.trim() === '422') return 422;
  throw new InvalidArgumentError('expected 422 (the IETF draft) or 400 (Stripe).');
}

function logLevel(value: string): string {
  try {
    return checkLevel(value);
  } catch {
    throw new InvalidArgumentError(`expected one of ${LOG_LEVELS.join(', ')}.`);
  }
}

/** Flags whose values a config file may give, by option name (camelCase, as startGateway takes them). */
const CONFIG_KEYS = new Set([
  'upstream',
  'port',
  'host',
  'store',
  'methods',
  'requireKey',
  'scopeHeader',
  'ttl',
  'lease',
  'concurrent',
  'upstreamTimeout',
  'upstreamDeadline',
  'drainTimeout',
  'headersTimeout',
  'requestTimeout',
  'keepAliveTimeout',
  'releaseOn',
  'maxBodyBytes',
  'maxResponseBytes',
  'mismatchStatus',
  'errorFormat',
  'completeTimeout',
  'migrate',
  'logFormat',
  'logLevel',
  'healthPath',
  'signatureKeys',
  'signatureOptional',
  'signatureMaxAge',
  'encryptionKeys',
  'limitInFlight',
  'limitNewKeys',
  'limitScopes',
  'adminPort',
  'adminHost',
  'adminTokenFile',
  'usage',
  'idempotency',
]);

/** Reads `--config FILE`: a JSON object of the options above; anything else is refused by name. */
function readConfig(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new IdempotencyConfigInvalidError(
      `--config: cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? error}).`,
    );
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    throw new IdempotencyConfigInvalidError(`--config: ${path} is not valid JSON (${(error as Error).message}).`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config))
    throw new IdempotencyConfigInvalidError(`--config: ${path} must hold a JSON object of options.`);
  for (const key of Object.keys(config)) {
    if (!CONFIG_KEYS.has(key))
      throw new IdempotencyConfigInvalidError(
        `--config: unknown option ${JSON.stringify(key)} in ${path}; expected some of ${[...CONFIG_KEYS].join(', ')}.`,
      );
  }
  return config as Record<string, unknown>;
}

/** Flag and environment values win over the config file; the file wins over defaults. */
function mergeConfig(command: Command, flags: Record<string, unknown>): Record<string, unknown> {
  const path = flags.config as string | undefined;
  if (!path) return flags;
  const config = readConfig(path);
  const merged: Record<string, unknown> = { ...flags };
  for (const [key, value] of Object.entries(config)) {
    const source = command.getOptionValueSource(key);
    if (source === undefined || source === 'default') merged[key] = value;
  }
  return merged;
}

function buildProgram(): Command {
  const program = new Command('idempo')
    .description('Idempotency keys for any HTTP API: replay the first response to every retry.')
    .version(version);

  program
    .command('serve')
    .description('Run the idempotency gateway in front of an upstream HTTP service.')
    .addOption(new Option('--upstream <url>', 'base URL of the service to protect (required)').env('IDEMPO_UPSTREAM'))
    .addOption(
      new Option('--port <port>', 'port to listen on')
        .env('IDEMPO_PORT')
        .default(GATEWAY_DEFAULTS.port)
        .argParser(port),
    )
    .addOption(
      new Option('--host <host>', 'interface to listen on (0.0.0.0 in a container)')
        .env('IDEMPO_HOST')
        .default(GATEWAY_DEFAULTS.host),
    )
    .addOption(
      new Option('--admin-port <port>', 'serve GET /metrics and GET /usage on this port, off the proxied paths')
        .env('IDEMPO_ADMIN_PORT')
        .argParser(port),
    )
    .addOption(
      new Option('--admin-host <host>', 'interface of the admin listener (keep it private)')
        .env('IDEMPO_ADMIN_HOST')
        .default(GATEWAY_DEFAULTS.adminHost),
    )
    .addOption(
      new Option(
        '--admin-token-file <file>',
        "file holding the bearer token of the admin page's key routes (or IDEMPO_ADMIN_TOKEN: the token itself)",
      ).env('IDEMPO_ADMIN_TOKEN_FILE'),
    )
    .addOption(
      new Option('--store <url>', 'memory: | sqlite:PATH | redis://HOST:PORT | postgres://USER@HOST/DB')
        .env('IDEMPO_STORE')
        .default(GATEWAY_DEFAULTS.store),
    )
    .addOption(
      new Option(
        '--migrate',
        'PostgreSQL: create or upgrade the schema at start (else an unmigrated database stops the start); SQLite: move a table an earlier version made to the current layout',
      ).env('IDEMPO_MIGRATE'),
    )
    .addOption(
      new Option('--methods <list>', 'comma-separated methods that take part')
        .env('IDEMPO_METHODS')
        .default(IDEMPOTENCY_DEFAULTS.methods, IDEMPOTENCY_DEFAULTS.methods.join(','))
        .argParser(methodList),
    )
    .addOption(
      new Option(
        '--require-key <patterns>',
        'comma-separated path patterns that must carry a key (* one segment, ** any)',
      )
        .env('IDEMPO_REQUIRE_KEY')
        .argParser(list),
    )
    .addOption(
      new Option('--scope-header <name>', 'request header whose value namespaces keys (e.g. x-tenant-id)').env(
        'IDEMPO_SCOPE_HEADER',
      ),
    )
    .addOption(
      new Option('--ttl <duration>', 'how long responses are kept (e.g. 24h)')
        .env('IDEMPO_TTL')
        .default(IDEMPOTENCY_DEFAULTS.ttl)
        .argParser(duration),
    )
    .addOption(
      new Option('--lease <duration>', 'how long a crashed request blocks its key (e.g. 60s)')
        .env('IDEMPO_LEASE')
        .default(IDEMPOTENCY_DEFAULTS.lease)
        .argParser(duration),
    )
    .addOption(
      new Option('--concurrent <mode>', 'duplicates while the first runs: reject (409) or wait')
        .env('IDEMPO_CONCURRENT')
        .choices(['reject', 'wait'])
        .default(IDEMPOTENCY_DEFAULTS.concurrent),
    )
    .addOption(
      new Option(
        '--release-on <statuses>',
        'upstream statuses that release the key so a retry runs again (none: keep all)',
      )
        .env('IDEMPO_RELEASE_ON')
        .default(IDEMPOTENCY_DEFAULTS.releaseOn, IDEMPOTENCY_DEFAULTS.releaseOn.join(','))
        .argParser(releaseOn),
    )
    .addOption(
      new Option('--max-body-bytes <bytes>', 'largest keyed request body read to fingerprint it (larger: 413)')
        .env('IDEMPO_MAX_BODY_BYTES')
        .default(IDEMPOTENCY_DEFAULTS.maxBodyBytes, '1mb')
        .argParser(bytes),
    )
    .addOption(
      new Option('--max-response-bytes <bytes>', 'largest response stored for replay (larger: sent, key kept as 410)')
        .env('IDEMPO_MAX_RESPONSE_BYTES')
        .default(IDEMPOTENCY_DEFAULTS.maxResponseBytes, '1mb')
        .argParser(bytes),
    )
    .addOption(
      new Option('--mismatch-status <status>', 'status for a key reused with another request: 422 or 400 (Stripe)')
        .env('IDEMPO_MISMATCH_STATUS')
        .default(IDEMPOTENCY_DEFAULTS.mismatchStatus)
        .argParser(mismatchStatus),
    )
    .addOption(
      new Option('--error-format <format>', "the gateway's own error bodies: problem (RFC 9457) or stripe")
        .env('IDEMPO_ERROR_FORMAT')
        .choices(['problem', 'stripe'])
        .default(IDEMPOTENCY_DEFAULTS.errorFormat),
    )
    .addOption(
      new Option(
        '--complete-timeout <duration>',
        'how long storing a result may be retried before the client gets a 5xx',
      )
        .env('IDEMPO_COMPLETE_TIMEOUT')
        .default(IDEMPOTENCY_DEFAULTS.completeTimeout)
        .argParser(duration),
    )
    .addOption(
      new Option(
        '--upstream-timeout <duration>',
        'answer the client 504 if the upstream has not answered by then (a keyed request is still waited for)',
      )
        .env('IDEMPO_UPSTREAM_TIMEOUT')
        .default(GATEWAY_DEFAULTS.upstreamTimeout)
        .argParser(duration),
    )
    .addOption(
      new Option(
        '--upstream-deadline <duration>',
        'keep waiting this long in all for a keyed request; past it the key is kept until its lease passes',
      )
        .env('IDEMPO_UPSTREAM_DEADLINE')
        .default(GATEWAY_DEFAULTS.upstreamDeadline)
        .argParser(duration),
    )
    .addOption(
      new Option('--drain-timeout <duration>', 'on SIGTERM, wait this long for the work under way, then hand it over')
        .env('IDEMPO_DRAIN_TIMEOUT')
        .default(GATEWAY_DEFAULTS.drainTimeout)
        .argParser(duration),
    )
    .addOption(
      new Option('--headers-timeout <duration>', 'a client must send its request headers within this (else 408)')
        .env('IDEMPO_HEADERS_TIMEOUT')
        .default(GATEWAY_DEFAULTS.headersTimeout)
        .argParser(duration),
    )
    .addOption(
      new Option('--request-timeout <duration>', 'a client must send its whole request within this (else 408; 0: off)')
        .env('IDEMPO_REQUEST_TIMEOUT')
        .default(GATEWAY_DEFAULTS.requestTimeout)
        .argParser(durationOrOff),
    )
    .addOption(
      new Option('--keep-alive-timeout <duration>', 'how long an idle client connection stays open')
        .env('IDEMPO_KEEP_ALIVE_TIMEOUT')
        .default(GATEWAY_DEFAULTS.keepAliveTimeout)
        .argParser(duration),
    )
    .addOption(
      new Option('--log-format <format>', 'json (one object a line) or pretty (for people)')
        .env('IDEMPO_LOG_FORMAT')
        .choices(['json', 'pretty'])
        .default(GATEWAY_DEFAULTS.logFormat),
    )
    .addOption(
      new Option('--log-level <level>', LOG_LEVELS.join(', '))
        .env('LOG_LEVEL')
        .default(GATEWAY_DEFAULTS.logLevel)
        .argParser(logLevel),
    )
    .addOption(
      new Option(
        '--signature-keys <file>',
        'require signed keyed requests (RFC 9421), verified with this JWK Set file (or IDEMPO_SIGNATURE_KEYS: the set itself)',
      ).env('IDEMPO_SIGNATURE_KEYS_FILE'),
    )
    .addOption(
      new Option('--signature-optional', 'accept unsigned keyed requests; signed ones must still verify').env(
        'IDEMPO_SIGNATURE_OPTIONAL',
      ),
    )
    .addOption(
      new Option('--signature-max-age <duration>', 'oldest signature accepted (default 5m)')
        .env('IDEMPO_SIGNATURE_MAX_AGE')
        .argParser(duration),
    )
    .addOption(
      new Option(
        '--encryption-keys <file>',
        'encrypt stored responses and steps at rest with this key set file (or IDEMPO_ENCRYPTION_KEYS: the set itself)',
      ).env('IDEMPO_ENCRYPTION_KEYS_FILE'),
    )
    .addOption(
      new Option(
        '--limit-in-flight <n>',
        'keys one scope (--scope-header value, else client address) may have in flight (else 429)',
      )
        .env('IDEMPO_LIMIT_IN_FLIGHT')
        .argParser(positiveCount),
    )
    .addOption(
      new Option(
        '--limit-new-keys <n/duration>',
        'new keys one scope may start per sliding window, e.g. 600/1m (else 429)',
      )
        .env('IDEMPO_LIMIT_NEW_KEYS')
        .argParser(perWindow),
    )
    .addOption(
      new Option('--limit-scopes <n>', `scopes the limits track at most (default ${LIMIT_DEFAULTS.maxScopes})`)
        .env('IDEMPO_LIMIT_SCOPES')
        .argParser(positiveCount),
    )
    .addOption(
      new Option('--config <file>', 'a JSON file of these options (camelCase); flags and env win over it').env(
        'IDEMPO_CONFIG',
      ),
    )
    .action(async (rawFlags: Record<string, unknown>, command: Command) => {
      const flags = mergeConfig(command, rawFlags);
      const extra = (flags.idempotency ?? {}) as Record<string, unknown>;
      const signatures = signatureOptionsFrom(flags, process.env);
      const encryption = encryptionOptionsFrom(flags.encryptionKeys as string | undefined, process.env);
      const limits = limitsFrom(flags);
      const gateway = await startGateway({
        upstream: flags.upstream as string,
        port: flags.port as number,
        host: flags.host as string,
        store: flags.store as string,
        migrate: flags.migrate === true || flags.migrate === 'true',
        methods: flags.methods as string[],
        ...(flags.requireKey ? { requireKey: flags.requireKey as string[] } : {}),
        ...(flags.scopeHeader ? { scopeHeader: flags.scopeHeader as string } : {}),
        ttl: flags.ttl as never,
        lease: flags.lease as never,
        upstreamTimeout: flags.upstreamTimeout as never,
        upstreamDeadline: flags.upstreamDeadline as never,
        drainTimeout: flags.drainTimeout as never,
        headersTimeout: flags.headersTimeout as never,
        requestTimeout: flags.requestTimeout as never,
        keepAliveTimeout: flags.keepAliveTimeout as never,
        ...(flags.healthPath ? { healthPath: flags.healthPath as string } : {}),
        ...(flags.adminPort !== undefined ? { adminPort: flags.adminPort as number } : {}),
        adminHost: flags.adminHost as string,
        ...adminTokenFrom(flags.adminTokenFile as string | undefined, process.env),
        ...(flags.usage ? { usage: flags.usage as never } : {}),
        ...(encryption === undefined ? {} : { encryption }),
        ...(limits === undefined ? {} : { limits }),
        logger: createGatewayLogger({ level: flags.logLevel as string, format: flags.logFormat as string }),
        idempotency: {
          ...extra,
          concurrent: flags.concurrent as 'reject' | 'wait',
          releaseOn: flags.releaseOn as never,
          maxBodyBytes: flags.maxBodyBytes as number,
          maxResponseBytes: flags.maxResponseBytes as number,
          mismatchStatus: flags.mismatchStatus as 400 | 422,
          errorFormat: flags.errorFormat as 'problem' | 'stripe',
          completeTimeout: flags.completeTimeout as never,
          ...(signatures === undefined ? {} : { signatures }),
        },
      });
      stopOnSignals(() => gateway.close());
    });

  program
    .command('migrate')
    .description(
      "Create or upgrade the store schema (PostgreSQL), or move a SQLite table an earlier version made to today's layout; other stores need none.",
    )
    .addOption(
      new Option('--store <url>', 'postgres://USER@HOST/DB or sqlite:PATH').env('IDEMPO_STORE').makeOptionMandatory(),
    )
    .action(async (flags: { store: string }) => {
      const opened = await openStore(flags.store, { checkSchema: false });
      try {
        const migrate = (opened.store as { migrate?: () => Promise<{ from: number; to: number; applied: number[] }> })
          .migrate;
        if (!migrate) {
          console.log(`${opened.description}: nothing to migrate (this store creates what it needs itself).`);
          return;
        }
        const result = await migrate.call(opened.store);
        console.log(
          result.applied.length === 0
            ? `${redact(flags.store)}: schema already at version ${result.to}.`
            : `${redact(flags.store)}: migrated schema from version ${result.from} to ${result.to}.`,
        );
      } finally {
        await opened.close();
      }
    });

  program.addCommand(keysCommand((line) => console.log(line)));

  return program;
}

buildProgram()
  .parseAsync()
  .catch(async (error: unknown) => {
    console.error(`idempo: ${describe(error)}`);
    await settleLogs();
    process.exit(1);
  });

/**
 * The admin token from the file `--admin-token-file` names, or from `IDEMPO_ADMIN_TOKEN`; never
 * from argv, where every user of the machine could read it.
 */
function adminTokenFrom(file: string | undefined, env: NodeJS.ProcessEnv): { adminToken?: string } {
  let token: string | undefined;
  try {
    token = file !== undefined ? readFileSync(file, 'utf8').trim() : env.IDEMPO_ADMIN_TOKEN?.trim();
  } catch (error) {
    throw new IdempotencyConfigInvalidError(
      `--admin-token-file: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? error}).`,
    );
  }
  if (token === undefined) return {};
  if (token.length < 16) {
    throw new IdempotencyConfigInvalidError(
      `--admin-token-file: the admin token must be at least 16 characters (got ${token.length}); make one with: openssl rand -hex 24`,
    );
  }
  return { adminToken: token };
}

/** One line for a failure at start: the coded message, or a system error named for what it hit. */
function describe(error: unknown): string {
  if (error instanceof IdempotencyError) return `${error.code}: ${error.message}`;
  const { code, message, address, port } = (error ?? {}) as NodeJS.ErrnoException & { address?: string; port?: number };
  if (code !== undefined && address !== undefined)
    return `${code}: ${address}${port === undefined ? '' : `:${port}`}: ${message}`;
  return String(message ?? error).split('\n')[0] ?? 'unknown error';
}
