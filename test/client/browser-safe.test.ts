/**
 * The client must run in browsers: nothing it loads, directly or through the vocabulary it
 * shares, may import a Node built-in or any package. Walks the static import graph of the source.
 */
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g;

it('loads only its own relative modules, no Node built-in and no package', () => {
  const seen = new Set<string>();
  const foreign: string[] = [];
  const queue = [resolve(root, 'src/client/index.ts')];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const match of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const specifier = match[1] ?? match[2] ?? match[3] ?? '';
      if (!specifier.startsWith('.')) foreign.push(`${relative(root, file)} → ${specifier}`);
      else queue.push(resolve(dirname(file), specifier.replace(/\.js$/, '.ts')));
    }
  }
  expect(foreign).toEqual([]);
  expect([...seen].map((file) => relative(root, file))).toContain('src/vocabulary/errors.ts');
});
