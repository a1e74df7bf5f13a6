import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { afterAll, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

// The TypeScript snippets of the README and the docs pages, compiled as a reader would paste them
// into a project that has idempo installed: `import … from 'idempo/…'` resolves to the built
// package (its own exports), and strict settings apply. A snippet shows only what is new, so the
// names it leaves out (the app, the business functions) are declared before it, each only where
// the snippet uses and does not define it. A snippet that drifts from the API fails here, not in a
// reader's editor.
//
// The TSDoc examples an editor shows on hover are snippets too: those of the adapters, the
// gateway, the client and the observability subpaths that import from idempo (whole programs, not
// fragments of their module) are compiled the same way.

const PAGES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.md'))
    .map((file) => join('docs', file)),
];
const snippets = PAGES.flatMap((page) =>
  [...readFileSync(join(ROOT, page), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => ({
    page,
    code: match[1] as string,
  })),
);
const readmeSnippets = snippets.filter(({ page }) => page === 'README.md');

/** Directories of src/ whose TSDoc examples are compiled. */
const EXAMPLE_DIRS = ['adapters', 'gateway', 'client', 'observability'];
const examples = EXAMPLE_DIRS.flatMap((sub) =>
  readdirSync(join(ROOT, 'src', sub), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.ts') && !/\.test(-d)?\.ts$/.test(file))
    .map((file) => join('src', sub, file)),
).flatMap((page) =>
  [...readFileSync(join(ROOT, page), 'utf8').matchAll(/^\s*\* @example\n\s*\* ```ts\n([\s\S]*?)^\s*\* ```$/gm)]
    .map((match) => ({ page, code: (match[1] as string).replace(/^\s*\* ?/gm, '') }))
    .filter(({ code }) => /from 'idempo[/']/.test(code)),
);

/** What a snippet may use without defining it, and how it is declared then. */
const GIVEN: [name: string, declaration: (snippet: string) => string][] = [
  ['idem', () => `declare const idem: import('idempo').Idempotency;`],
  [
    'store',
    (snippet) =>
      snippet.includes("'idempo/postgres'")
        ? `declare const store: import('idempo/postgres').PostgresStore;`
        : `declare const store: import('idempo').IdempotencyStore;`,
  ],
  ['pool', () => `declare const pool: import('pg').Pool;`],
  ['request', () => `declare const request: Request;`],
  ['createIdempotency', () => `import { createIdempotency } from 'idempo';`],
  ['createMemoryStore', () => `import { createMemoryStore } from 'idempo/memory';`],
  ['createIdempotentFetch', () => `import { createIdempotentFetch } from 'idempo/client';`],
  ['idempotentFetch', () => `declare const idempotentFetch: import('idempo/client').IdempotentFetch;`],
  ['url', () => `declare const url: string;`],
  ['body', () => `declare const body: string;`],
  ['logger', () => `declare const logger: { warn(fields: object, message: string): void };`],
  ['outbox', () => `declare const outbox: { save(entry: object): Promise<void> };`],
  ['handler', () => `declare function handler(): Promise<{ ok: boolean }>;`],
  ['express', () => `import express from 'express';`],
  ['app', appFor],
  ['charge', () => `declare function charge(input: unknown): Promise<{ id: string }>;`],
  ['chargeCard', () => `declare function chargeCard(input?: unknown): Promise<{ id: string }>;`],
  ['payments', () => `declare const payments: { charge(orderId: string, amount: number): Promise<{ id: string }> };`],
  ['createOrder', () => `declare function createOrder(input?: unknown): Promise<{ id: string }>;`],
  ['psp', () => `declare const psp: { charge(card: string, amount: number): Promise<{ id: string }> };`],
  ['card', () => `declare const card: string;`],
  ['amount', () => `declare const amount: number;`],
  ['ledger', () => `declare const ledger: { record(entry: unknown): Promise<void> };`],
  ['PaymentsService', () => `declare class PaymentsService { charge(body: CreatePayment): Promise<{ id: string }>; }`],
  ['CreatePayment', () => `declare class CreatePayment { amount: number; }`],
];

/** The app of the framework whose adapter the snippet imports. */
function appFor(snippet: string): string {
  if (snippet.includes("'idempo/express'")) return `const app = express();`;
  if (snippet.includes("'idempo/fastify'")) return `import Fastify from 'fastify';\nconst app = Fastify();`;
  if (snippet.includes("'idempo/hono'")) return `import { Hono } from 'hono';\nconst app = new Hono();`;
  if (snippet.includes("'idempo/koa'")) return `import Koa from 'koa';\nconst app = new Koa();`;
  throw new Error(`a README snippet uses app without importing an adapter:\n${snippet}`);
}

function defines(snippet: string, name: string): boolean {
  return new RegExp(`(import[^;]*\\b${name}\\b[^;]*from)|((const|let|var|function|class)\\s+${name}\\b)`).test(snippet);
}

function preludeFor(snippet: string): string {
  const code = snippet.replace(/\/\/.*$/gm, '');
  const needs = (name: string) =>
    new RegExp(`\\b${name}\\b`).test(code) ||
    // An Express app is made with express().
    (name === 'express' && code.includes("'idempo/express'") && /\bapp\b/.test(code));
  return GIVEN.filter(([name]) => needs(name) && !defines(code, name))
    .map(([, declaration]) => declaration(snippet))
    .join('\n');
}

// Inside the repository, so that `idempo` resolves to this package and its peers to node_modules.
const dir = mkdtempSync(join(ROOT, 'test', 'docs', '.snippets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("finds the snippets: one per face in the README, and the adapters' TSDoc examples", () => {
  expect(readmeSnippets.length).toBeGreaterThanOrEqual(8);
  expect(snippets.length).toBeGreaterThan(readmeSnippets.length);
  const pages = examples.map(({ page }) => page);
  for (const adapter of ['express', 'fastify', 'hono', 'koa', 'node', 'function'])
    expect(pages).toContain(join('src', 'adapters', `${adapter}.ts`));
});

it('compiles every TypeScript snippet of the README and the docs, and those TSDoc examples, against the built package', () => {
  const files = [...snippets, ...examples].map(({ page, code }, index) => {
    const file = join(dir, `${page.replace(/\W+/g, '-')}-${index}.ts`);
    writeFileSync(file, `${preludeFor(code)}\n${code}\nexport {};\n`);
    return file;
  });
  const program = ts.createProgram(files, {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2023.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
    types: ['node'],
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    experimentalDecorators: true,
    emitDecoratorMetadata: true,
    esModuleInterop: true,
  });
  const problems = ts
    .getPreEmitDiagnostics(program)
    .filter((diagnostic) => diagnostic.file === undefined || files.includes(diagnostic.file.fileName))
    .map((diagnostic) => {
      const where = diagnostic.file
        ? `${diagnostic.file.fileName.slice(dir.length + 1)}:${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0).line + 1}`
        : '';
      return `${where} ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`;
    });
  expect(problems).toEqual([]);
}, 60_000);
