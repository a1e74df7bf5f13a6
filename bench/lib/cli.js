/**
 * The bench tools' command lines: `parseArgs` plus `--help` (`-h`), which prints the tool's own
 * opening comment, the usage it documents; an unknown or malformed option prints that usage
 * after the error, instead of a stack trace, and exits with status 2. An option declared with a
 * `number` kind comes back as a number, and a value that is not one of that kind is malformed.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/**
 * The opening comment of the script at `url` (a block comment, or a run of line comments), as
 * plain text.
 */
export function usageOf(url) {
  const text = readFileSync(fileURLToPath(url), 'utf8');
  const block = /^\s*\/\*\*?([\s\S]*?)\*\//.exec(text);
  const lines = block
    ? block[1].split('\n').map((line) => line.replace(/^\s*\* ?/, ''))
    : (/^(?:\s*\/\/.*\n)+/.exec(text)?.[0] ?? '').split('\n').map((line) => line.replace(/^\s*\/\/ ?/, ''));
  return lines.join('\n').trim();
}

/**
 * What a numeric option may hold, by the `number` kind its declaration names. A value outside
 * it would otherwise reach the tool as `NaN` or a negative count and measure something else.
 */
const NUMBER_KINDS = {
  count: { ok: (n) => Number.isSafeInteger(n) && n >= 1, expected: 'a whole number of 1 or more' },
  whole: { ok: (n) => Number.isSafeInteger(n) && n >= 0, expected: 'a whole number of 0 or more' },
  seconds: { ok: (n) => Number.isFinite(n) && n >= 0, expected: 'a number of seconds, 0 or more' },
  positive: { ok: (n) => Number.isFinite(n) && n > 0, expected: 'a number above 0' },
};

/**
 * `parseArgs(config)` for the script at `url`, with `--help` added to its options. An option
 * may name a `number` kind (`count`, `whole`, `seconds`, `positive`): its value, given or
 * default, is returned as a number of that kind.
 */
export function parseToolArgs(url, config) {
  const kinds = {};
  const options = { help: { type: 'boolean', short: 'h' } };
  for (const [name, { number, ...option }] of Object.entries(config.options)) {
    if (number !== undefined) {
      if (!(number in NUMBER_KINDS)) throw new Error(`option --${name}: unknown number kind ${number}`);
      kinds[name] = NUMBER_KINDS[number];
    }
    options[name] = option;
  }
  let parsed;
  try {
    parsed = parseArgs({ ...config, options });
  } catch (error) {
    if (!String(error?.code).startsWith('ERR_PARSE_ARGS')) throw error;
    refuse(url, error.message);
  }
  if (parsed.values.help) {
    process.stdout.write(`${usageOf(url)}\n`);
    process.exit(0);
  }
  for (const [name, kind] of Object.entries(kinds)) {
    const given = parsed.values[name];
    if (given === undefined) continue;
    // Number('') is 0 and Number(' 2') is 2: only what reads as a number whole is one.
    const value = given.trim() === given && given !== '' ? Number(given) : Number.NaN;
    if (!kind.ok(value)) refuse(url, `--${name}: expected ${kind.expected}, got ${JSON.stringify(given)}`);
    parsed.values[name] = value;
  }
  return parsed;
}

/**
 * Exits as a malformed command line does: the error, the usage of the script at `url`, status 2.
 * For what `parseToolArgs` cannot check alone: options that must agree, positionals.
 */
export function refuse(url, message) {
  process.stderr.write(`${message}\n\n${usageOf(url)}\n`);
  process.exit(2);
}
