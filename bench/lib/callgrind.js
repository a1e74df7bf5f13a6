/**
 * Where a callgrind count went, function by function. callgrind names V8's builtins and the C and
 * C++ of Node and its addons, but JavaScript compiled at run time shows as bare addresses; Node
 * started with `--perf-basic-prof` writes `/tmp/perf-<pid>.map`, each compiled function's address
 * range and name, and that names them. (The flag also keeps V8 from moving compiled code, so an
 * address keeps its name.)
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** The `perf-<pid>.map` a Node process started with `--perf-basic-prof` writes. */
export function perfMapPath(pid) {
  return `/tmp/perf-${pid}.map`;
}

/**
 * A lookup from an address to the name of the compiled function that holds it. V8 reuses the
 * space of code it dropped, so ranges in the map can overlap: the one written last wins.
 */
function addressNames(perfMap) {
  const ranges = [];
  for (const line of readFileSync(perfMap, 'utf8').split('\n')) {
    const first = line.indexOf(' ');
    const second = line.indexOf(' ', first + 1);
    if (second < 0) continue;
    const start = Number.parseInt(line.slice(0, first), 16);
    const end = start + Number.parseInt(line.slice(first + 1, second), 16);
    ranges.push({ start, end, name: line.slice(second + 1), written: ranges.length });
  }
  ranges.sort((a, b) => a.start - b.start);
  const longest = ranges.reduce((n, r) => Math.max(n, r.end - r.start), 0);
  return (address) => {
    // The last range starting at or before the address, then back over every range that could
    // still reach it.
    let low = 0;
    let high = ranges.length - 1;
    while (low <= high) {
      const mid = (low + high) >> 1;
      if (ranges[mid].start <= address) low = mid + 1;
      else high = mid - 1;
    }
    let found;
    for (let i = high; i >= 0 && ranges[i].start > address - longest; i--) {
      const range = ranges[i];
      if (address < range.end && (found === undefined || range.written > found.written)) found = range;
    }
    return found?.name;
  };
}

/** A C++ name without its argument list, which makes it long and tells little here (overloads add up). */
function withoutArguments(name) {
  if (!name.includes('::') || !name.includes(')')) return name;
  let depth = 0;
  for (let i = name.lastIndexOf(')'); i >= 0; i--) {
    if (name[i] === ')') depth++;
    else if (name[i] === '(' && --depth === 0) return name.slice(0, i);
  }
  return name;
}

/**
 * A function's name as the tables show it: V8's tier marks (`*` optimised, `~` interpreted, `^`
 * baseline) dropped, so one function's tiers add up; paths made relative to the checkouts in
 * `roots` (a worktree's `node_modules` may be a link to another's); C++ names without their
 * argument lists.
 */
function displayName(name, roots) {
  let shown = withoutArguments(name).replace(/^JS:[*~^+]?/, 'JS ');
  for (const root of roots) shown = shown.replaceAll(`file://${root}/`, '').replaceAll(`${root}/`, '');
  return shown;
}

/**
 * Instructions spent in each function of one callgrind dump (its own instructions, not those of
 * what it calls), JavaScript named through `perfMap` when given; addresses it cannot name add up
 * under "JavaScript, unnamed".
 */
export function functionCosts(file, { perfMap, roots = [] } = {}) {
  const nameOf = perfMap === undefined ? () => undefined : addressNames(perfMap);
  const annotated = execFileSync('callgrind_annotate', ['--threshold=100', file], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  const costs = new Map();
  for (const line of annotated.split('\n')) {
    const match = /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+)$/.exec(line);
    if (match === null || match[2].startsWith('PROGRAM TOTALS') || match[2].includes('file:function')) continue;
    const instructions = Number(match[1].replaceAll(',', ''));
    // `file:function [object]`: the object adds nothing to the name.
    let name = match[2].replace(/\s+\[[^\]]*\]$/, '');
    const address = /^\?\?\?:0x([0-9a-f]+)/.exec(name);
    if (address !== null) name = nameOf(Number.parseInt(address[1], 16)) ?? 'JavaScript, unnamed';
    name = displayName(name.replace(/^\?\?\?:/, ''), roots);
    costs.set(name, (costs.get(name) ?? 0) + instructions);
  }
  return costs;
}

/**
 * The functions whose instructions per request differ most between two counts, `base` and
 * `other` (maps from {@link functionCosts}, each with its number of responses): the top `limit`
 * by what `other` adds, then those where it saves most.
 */
export function costDifferences(base, other, limit) {
  const names = new Set([...base.costs.keys(), ...other.costs.keys()]);
  const rows = [...names].map((name) => {
    const before = (base.costs.get(name) ?? 0) / base.responses;
    const after = (other.costs.get(name) ?? 0) / other.responses;
    return { name, before, after, added: after - before };
  });
  rows.sort((a, b) => b.added - a.added);
  const saved = rows.filter((row) => row.added < 0).slice(-Math.ceil(limit / 4));
  return { added: rows.slice(0, limit).filter((row) => row.added > 0), saved: saved.reverse() };
}
