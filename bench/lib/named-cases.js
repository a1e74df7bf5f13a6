/**
 * The cases a side-by-side tool was asked for on its command line (`bench/ab.js`,
 * `bench/instructions.js`): `CASE` is a case of this checkout, `CASE@DIR` the same case run from
 * another checkout (built, with `node_modules` linked in), so two builds of one case can be
 * measured against each other.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { allCases } from '../cases.js';

/** Each name's case, labelled with the name as given; `root` is set for `CASE@DIR`. */
export function namedCases(names) {
  const known = new Map(allCases().map((c) => [c.id, c]));
  const cases = names.map((name) => {
    const [id, dir] = name.split('@');
    const c = known.get(id);
    if (c === undefined) throw new Error(`no case ${id}; cases are ${[...known.keys()].join(', ')}`);
    if (dir === undefined) return { ...c, label: id };
    const root = resolve(dir);
    if (!existsSync(join(root, 'dist', 'index.js')) || !existsSync(join(root, 'bench', 'lib', 'host.js'))) {
      throw new Error(`${name}: ${root} is not a built checkout (no dist/index.js or bench/lib/host.js)`);
    }
    return { ...c, label: name, root };
  });
  if (new Set(cases.map((c) => c.label)).size !== cases.length) throw new Error('a case is named twice');
  return cases;
}
