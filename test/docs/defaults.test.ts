import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IDEMPOTENCY_DEFAULTS } from '../../src/engine/defaults.js';
import { GATEWAY_DEFAULTS } from '../../src/gateway/defaults.js';
import { ROOT } from '../helpers/servers.js';

// The defaults live in one object each; the README's tables and the options' TSDoc repeat them
// for readers. These tests fail when one of the copies drifts from the object.

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const types = readFileSync(join(ROOT, 'src', 'engine', 'types.ts'), 'utf8');

/** A value as the docs write it: `'60s'`, `['POST', 'PATCH']`, `{ exclude: […] }`, `1048576`. */
function literal(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (Array.isArray(value)) return `[${value.map(literal).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{ ${Object.entries(value)
      .map(([key, item]) => `${key}: ${literal(item)}`)
      .join(', ')} }`;
  }
  return String(value);
}

/** The second cell of the README table row that starts with `` `name` ``. */
function readmeCell(name: string, column = 1): string | undefined {
  const row = readme.split('\n').find((line) => line.startsWith(`| \`${name}`));
  return row?.split(' | ')[column]?.replace(/^`|`$/g, '');
}

describe('IDEMPOTENCY_DEFAULTS', () => {
  it.each(Object.entries(IDEMPOTENCY_DEFAULTS))('README options table: %s', (name, value) => {
    expect(readmeCell(name)).toBe(literal(value));
  });

  it.each(Object.entries(IDEMPOTENCY_DEFAULTS))('TSDoc @default of IdempotencyOptions.%s', (name, value) => {
    const doc = new RegExp(`@default ([^\\n]*)\\n\\s*\\*/\\n\\s*${name}\\?:`).exec(types)?.[1];
    expect(doc, `no @default above ${name} in src/engine/types.ts`).toBeDefined();
    // A number may be followed by a reading aid: `1048576 (1 MiB)`.
    expect(doc?.replace(/ \(.*\)$/, '')).toBe(literal(value));
  });
});

describe('GATEWAY_DEFAULTS', () => {
  const flags: Record<string, keyof typeof GATEWAY_DEFAULTS> = {
    '--port': 'port',
    '--host': 'host',
    '--store': 'store',
    '--upstream-timeout': 'upstreamTimeout',
    '--upstream-deadline': 'upstreamDeadline',
    '--drain-timeout': 'drainTimeout',
    '--headers-timeout': 'headersTimeout',
    '--request-timeout': 'requestTimeout',
    '--keep-alive-timeout': 'keepAliveTimeout',
    '--log-format': 'logFormat',
    '--log-level': 'logLevel',
  };
  it.each(Object.entries(flags))("README flag table: %s's default", (flag, name) => {
    expect(readmeCell(flag, 2)).toBe(String(GATEWAY_DEFAULTS[name]));
  });
});
