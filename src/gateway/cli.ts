#!/usr/bin/env node
/**
 * The `idempo` command: `idempo serve` runs the gateway, `idempo migrate` prepares a store.
 * Every flag has an environment-variable twin, so containers can be configured without flags.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { IdempotencyError } from '../engine/errors.js';
import { startGateway } from './server.js';
import { openStore, redact } from './store-url.js';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65_535)
    throw new InvalidArgumentError('expected a port number from 0 to 65535.');
  return n;
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

function buildProgram(): Command {
  const program = new Command('idempo')
    .description('Idempotency keys for any HTTP API: replay the first response to every retry.')
    .version(version)
    .showHelpAfterError();

  program
    .command('serve')
    .description('Run the idempotency gateway in front of an upstream HTTP service.')
    .addOption(
      new Option('--upstream <url>', 'base URL of the service to protect').env('IDEMPO_UPSTREAM').makeOptionMandatory(),
    )
    .addOption(new Option('--port <port>', 'port to listen on').env('IDEMPO_PORT').default(8080).argParser(port))
    .addOption(
      new Option('--host <host>', 'interface to listen on (0.0.0.0 in a container)')
        .env('IDEMPO_HOST')
        .default('127.0.0.1'),
    )
    .addOption(
      new Option('--store <url>', 'memory: | sqlite:PATH | redis://HOST:PORT | postgres://USER@HOST/DB')
        .env('IDEMPO_STORE')
        .default('sqlite:./idempo.db'),
    )
    .addOption(
      new Option('--methods <list>', 'comma-separated methods that take part')
        .env('IDEMPO_METHODS')
        .default(['POST', 'PATCH'], 'POST,PATCH')
        .argParser(list),
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
      new Option('--ttl <duration>', 'how long responses are kept (e.g. 24h)').env('IDEMPO_TTL').default('24h'),
    )
    .addOption(
      new Option('--lease <duration>', 'how long a crashed request blocks its key (e.g. 60s)')
        .env('IDEMPO_LEASE')
        .default('60s'),
    )
    .addOption(
      new Option('--concurrent <mode>', 'duplicates while the first runs: reject (409) or wait')
        .env('IDEMPO_CONCURRENT')
        .choices(['reject', 'wait'])
        .default('reject'),
    )
    .addOption(
      new Option(
        '--upstream-timeout <duration>',
        'answer the client 504 if the upstream has not answered by then (a keyed request is still waited for)',
      )
        .env('IDEMPO_UPSTREAM_TIMEOUT')
        .default('30s'),
    )
    .addOption(
      new Option(
        '--upstream-deadline <duration>',
        'keep waiting this long in all for a keyed request; past it the key is kept until its lease passes',
      )
        .env('IDEMPO_UPSTREAM_DEADLINE')
        .default('5m'),
    )
    .addOption(
      new Option('--drain-timeout <duration>', 'on SIGTERM, wait this long for the work under way, then hand it over')
        .env('IDEMPO_DRAIN_TIMEOUT')
        .default('30s'),
    )
    .action(async (flags: Record<string, unknown>) => {
      const gateway = await startGateway({
        upstream: flags.upstream as string,
        port: flags.port as number,
        host: flags.host as string,
        store: flags.store as string,
        methods: flags.methods as string[],
        ...(flags.requireKey ? { requireKey: flags.requireKey as string[] } : {}),
        ...(flags.scopeHeader ? { scopeHeader: flags.scopeHeader as string } : {}),
        ttl: flags.ttl as never,
        lease: flags.lease as never,
        upstreamTimeout: flags.upstreamTimeout as never,
        upstreamDeadline: flags.upstreamDeadline as never,
        drainTimeout: flags.drainTimeout as never,
        idempotency: { concurrent: flags.concurrent as 'reject' | 'wait' },
      });
      const stop = () => {
        gateway.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });

  program
    .command('migrate')
    .description('Create or upgrade the store schema (PostgreSQL; other stores need none).')
    .addOption(new Option('--store <url>', 'postgres://USER@HOST/DB').env('IDEMPO_STORE').makeOptionMandatory())
    .action(async (flags: { store: string }) => {
      const opened = await openStore(flags.store);
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

  return program;
}

buildProgram()
  .parseAsync()
  .catch((error: unknown) => {
    const message =
      error instanceof IdempotencyError
        ? `${error.code}: ${error.message}`
        : String((error as Error)?.message ?? error);
    console.error(`idempo: ${message}`);
    process.exit(1);
  });
