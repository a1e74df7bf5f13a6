import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import * as client from '../../src/client/index.js';
import * as gateway from '../../src/gateway/index.js';
import * as core from '../../src/index.js';
import * as encryption from '../../src/stores/encrypted.js';
import * as postgres from '../../src/stores/postgres.js';
import { IdempotencyError } from '../../src/vocabulary/errors.js';
import { ROOT } from '../helpers/servers.js';

// docs/protocol.md lists every error a user can meet: its code, class, status and problem type.
// Those are public forever, so the page must say exactly what the classes say, and name them all.

const page = readFileSync(join(ROOT, 'docs', 'protocol.md'), 'utf8');
const rows = page
  .split('\n')
  .filter((line) => line.startsWith('| `IDEMPO_'))
  .map((line) => line.split(' | ').map((cell) => cell.replace(/^\| /, '')));

const classes = Object.entries({ ...core, ...gateway, ...client, ...postgres, ...encryption } as Record<
  string,
  unknown
>).filter(
  (entry): entry is [string, new (message: string, options: object) => IdempotencyError] =>
    typeof entry[1] === 'function' &&
    entry[1].prototype instanceof IdempotencyError &&
    // A deprecated name is the same class under its old name: the row is under the class's own name.
    (entry[1] as { name: string }).name === entry[0],
);

it('has one row per exported error class', () => {
  const named = rows.map((cells) => /`(\w+)`/.exec(cells[1] ?? '')?.[1]).sort();
  expect(named).toEqual(classes.map(([name]) => name).sort());
});

it.each(classes)('%s: code, status and problem type as the class has them', (name, Class) => {
  // Options every constructor accepts, the client's attempt count included.
  const error = new Class('message', { attempts: 1, idempotencyKey: undefined });
  const row = rows.find((cells) => cells[1]?.startsWith(`\`${name}\``));
  expect(row, `no row for ${name} in docs/protocol.md`).toBeDefined();
  const [code, , status, type] = row as string[];
  expect(code).toBe(`\`${error.code}\``);
  // A status the user can change is written with its alternative: `422 (or 400)`.
  expect(status?.split(' ')[0]).toBe(String(error.status));
  expect(type).toBe(`\`${error.type}\``);
});
