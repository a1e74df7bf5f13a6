/**
 * The layering of src/, as docs/architecture.md draws it, checked on every module's imports:
 * static `import … from` and `export … from`, side-effect `import '…'`, `import x = require()`,
 * type-position `import('…')`, and dynamic `import('…')`/`require('…')` calls. Type-only imports
 * count: a type imported upward still ties a lower layer to a higher one. Tests are excluded.
 *
 * The rules: every module sits in a layer of the table below; a module imports only from its own
 * layer and the layers its row allows; the vocabulary imports no package and no Node built-in;
 * and the module graph has no cycle at all, within a layer or across.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

const SRC = join(ROOT, 'src');

/**
 * What each layer may import besides itself. A new folder under src/ must be given a row here
 * (the test fails on a module it cannot place) so its place in the picture is a decision.
 */
const ALLOWED: Record<string, readonly string[]> = {
  vocabulary: [],
  // HTTP Message Signatures: the engine verifies, the client signs, with one browser-safe implementation.
  signatures: ['vocabulary'],
  engine: ['signatures', 'vocabulary'],
  stores: ['vocabulary'],
  client: ['signatures', 'vocabulary'],
  adapters: ['engine', 'vocabulary'],
  // Metrics, traces and key usage: observers of the engine (its types) and wrappers of a store.
  observability: ['engine', 'vocabulary'],
  gateway: ['adapters', 'stores', 'observability', 'engine', 'signatures', 'vocabulary'],
  // src/index.ts, the core's public face: the engine and the words it speaks, no store, no adapter.
  index: ['engine', 'signatures', 'vocabulary'],
};

function layerOf(file: string): string | undefined {
  const path = relative(SRC, file).split('\\').join('/');
  if (path === 'index.ts') return 'index';
  const folder = path.includes('/') ? path.slice(0, path.indexOf('/')) : undefined;
  return folder !== undefined && folder in ALLOWED ? folder : undefined;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .filter((entry) => !/\.test(-d)?\.ts$/.test(entry.name))
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
}

interface Edge {
  from: string;
  to: string;
  line: number;
}

/** Every module specifier a file names, with its line, found on the syntax tree (comments and strings are not imports). */
function specifiersOf(file: string): { specifier: string; line: number }[] {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: { specifier: string; line: number }[] = [];
  const add = (node: ts.Node | undefined) => {
    if (node && ts.isStringLiteralLike(node)) {
      found.push({ specifier: node.text, line: source.getLineAndCharacterOfPosition(node.getStart()).line + 1 });
    }
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) add(node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node.moduleReference.expression);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node.argument.literal);
    else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const dynamic = callee.kind === ts.SyntaxKind.ImportKeyword;
      const required = ts.isIdentifier(callee) && callee.text === 'require';
      if (dynamic || required) add(node.arguments[0]);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

function graph(): { files: string[]; edges: Edge[] } {
  const files = sourceFiles(SRC);
  const edges: Edge[] = [];
  for (const file of files) {
    for (const { specifier, line } of specifiersOf(file)) {
      if (!specifier.startsWith('.')) continue;
      edges.push({ from: file, to: resolve(dirname(file), specifier.replace(/\.js$/, '.ts')), line });
    }
  }
  return { files, edges };
}

const name = (file: string) => relative(ROOT, file).split('\\').join('/');

/** The cycles of the graph: for each module in a strongly connected component (or importing itself), the shortest one through it. */
function cycles(files: string[], edges: Edge[]): string[][] {
  const next = new Map<string, string[]>(files.map((f) => [f, []]));
  for (const { from, to } of edges) next.get(from)?.push(to);
  // Tarjan's algorithm; it recurses as deep as the longest import chain, a few dozen modules.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || next.get(v)?.includes(v)) components.push(component);
    }
  };
  for (const file of files) if (!index.has(file)) connect(file);
  // Within each component, the shortest way from each module back to itself: cycles to read,
  // each once whichever module it is read from.
  const found = new Map<string, string[]>();
  for (const component of components) {
    const members = new Set(component);
    for (const start of component) {
      const previous = new Map<string, string>();
      const queue = [start];
      while (queue.length > 0 && !previous.has(start)) {
        const v = queue.shift()!;
        for (const w of next.get(v) ?? []) {
          if (!members.has(w) || previous.has(w)) continue;
          previous.set(w, v);
          queue.push(w);
        }
      }
      const path: string[] = [];
      for (let v = previous.get(start)!; v !== start; v = previous.get(v)!) path.unshift(v);
      const cycle = [start, ...path];
      const first = cycle.indexOf([...cycle].sort()[0]!);
      const rotated = [...cycle.slice(first), ...cycle.slice(0, first)];
      found.set(rotated.join('\n'), [...rotated, rotated[0]!].map(name));
    }
  }
  return [...found.values()];
}

describe('architecture: the import graph of src/', () => {
  const { files, edges } = graph();

  it('finds the modules and their imports', () => {
    expect(files.length).toBeGreaterThan(40);
    expect(edges.length).toBeGreaterThan(100);
    for (const { to } of edges) expect(files, `${name(to)} is imported but not found`).toContain(to);
  });

  it('places every module in a layer of the table', () => {
    expect(files.filter((file) => layerOf(file) === undefined).map(name)).toEqual([]);
  });

  it('imports only downward: each layer from itself and the layers its row allows', () => {
    const upward = edges
      .filter(({ from, to }) => {
        const [a, b] = [layerOf(from), layerOf(to)];
        return a !== undefined && b !== undefined && a !== b && !ALLOWED[a]!.includes(b);
      })
      .map(({ from, to, line }) => `${name(from)}:${line} (${layerOf(from)}) → ${name(to)} (${layerOf(to)})`);
    expect(upward).toEqual([]);
  });

  it('keeps the vocabulary and the signatures free of packages and Node built-ins, since the client loads them in a browser', () => {
    const foreign = [...sourceFiles(join(SRC, 'vocabulary')), ...sourceFiles(join(SRC, 'signatures'))].flatMap((file) =>
      specifiersOf(file)
        .filter(({ specifier }) => !specifier.startsWith('.'))
        .map(({ specifier, line }) => `${name(file)}:${line} → ${specifier}`),
    );
    expect(foreign).toEqual([]);
  });

  it('has no import cycle', () => {
    expect(cycles(files, edges).map((cycle) => cycle.join(' → '))).toEqual([]);
  });
});
