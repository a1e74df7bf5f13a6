import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IDEMPOTENCY_DEFAULTS } from '../../src/engine/defaults.js';
import { GATEWAY_DEFAULTS } from '../../src/gateway/defaults.js';
import { ROOT } from '../helpers/servers.js';

// The defaults live in one object each; the docs' tables (docs/options.md, docs/gateway.md) and
// the options' TSDoc repeat them for readers. These tests fail when one of the copies drifts from
// the object.

const optionsPage = readFileSync(join(ROOT, 'docs', 'options.md'), 'utf8');
const gatewayPage = readFileSync(join(ROOT, 'docs', 'gateway.md'), 'utf8');
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

/** A cell (by default the second) of the page's table row that starts with `` `name` ``. */
function cell(page: string, name: string, column = 1): string | undefined {
  const row = page.split('\n').find((line) => line.startsWith(`| \`${name}`));
  return row?.split(' | ')[column]?.replace(/^`|`$/g, '');
}

describe('IDEMPOTENCY_DEFAULTS', () => {
  it.each(Object.entries(IDEMPOTENCY_DEFAULTS))('docs/options.md table: %s', (name, value) => {
    expect(cell(optionsPage, `${name}\``)).toBe(literal(value));
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
    '--admin-host': 'adminHost',
  };
  it.each(Object.entries(flags))("docs/gateway.md flag table: %s's default", (flag, name) => {
    expect(cell(gatewayPage, `${flag} `, 2)).toBe(String(GATEWAY_DEFAULTS[name]));
  });
});
