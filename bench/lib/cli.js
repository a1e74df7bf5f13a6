/**
 * The bench tools' command lines: `parseArgs` plus `--help` (`-h`), which prints the tool's own
 * opening comment, the usage it documents; an unknown or malformed option prints that usage
 * after the error, instead of a stack trace, and exits with status 2.
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

/** `parseArgs(config)` for the script at `url`, with `--help` added to its options. */
export function parseToolArgs(url, config) {
  let parsed;
  try {
    parsed = parseArgs({ ...config, options: { ...config.options, help: { type: 'boolean', short: 'h' } } });
  } catch (error) {
    if (!String(error?.code).startsWith('ERR_PARSE_ARGS')) throw error;
    process.stderr.write(`${error.message}\n\n${usageOf(url)}\n`);
    process.exit(2);
  }
  if (parsed.values.help) {
    process.stdout.write(`${usageOf(url)}\n`);
    process.exit(0);
  }
  return parsed;
}

/** The option `name` of parsed `values` as a positive integer; throws naming the option otherwise. */
export function positiveInteger(values, name) {
  const value = Number(values[name]);
  if (!Number.isSafeInteger(value) || value < 1)
    throw new Error(`--${name}: expected a positive integer, got ${values[name]}`);
  return value;
}
