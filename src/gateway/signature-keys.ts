/**
 * The gateway's signed-request settings: the verification keys come from a file
 * (`--signature-keys FILE`, or `IDEMPO_SIGNATURE_KEYS_FILE`) or from the environment
 * (`IDEMPO_SIGNATURE_KEYS`, the JWK Set itself), never from argv, where every user of the machine
 * could read them in the process list.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import type { SignatureOptions } from '../engine/types.js';
import { parseKeySet } from '../signatures/index.js';
import { type Duration, IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/** The flags (and their environment twins) that turn signatures on. */
export interface SignatureFlags {
  /** A JWK Set file (`--signature-keys`). */
  signatureKeys?: string | undefined;
  /** Accept unsigned keyed requests, still refusing badly signed ones (`--signature-optional`). */
  signatureOptional?: boolean | string | undefined;
  /** Oldest signature accepted (`--signature-max-age`). */
  signatureMaxAge?: string | undefined;
}

/**
 * The engine's `signatures` option from the flags and `env`, or `undefined` when no keys are
 * configured. Throws {@link IdempotencyConfigInvalidError} for an unreadable or malformed key set.
 *
 * @example
 * ```ts
 * const signatures = signatureOptionsFrom({ signatureKeys: './keys.json' }, process.env);
 * ```
 */
export function signatureOptionsFrom(
  flags: SignatureFlags,
  env: Record<string, string | undefined>,
): SignatureOptions | undefined {
  const inline = env.IDEMPO_SIGNATURE_KEYS;
  if (flags.signatureKeys !== undefined && inline !== undefined && inline !== '')
    throw new IdempotencyConfigInvalidError(
      'signature keys: give them in one place, --signature-keys FILE (IDEMPO_SIGNATURE_KEYS_FILE) or IDEMPO_SIGNATURE_KEYS, not both.',
    );
  let text: string | undefined;
  let source: string;
  if (flags.signatureKeys !== undefined) {
    source = flags.signatureKeys;
    try {
      text = readFileSync(flags.signatureKeys, 'utf8');
    } catch (error) {
      throw new IdempotencyConfigInvalidError(
        `--signature-keys: cannot read ${flags.signatureKeys} (${(error as NodeJS.ErrnoException).code ?? error}).`,
      );
    }
  } else {
    source = 'IDEMPO_SIGNATURE_KEYS';
    text = inline === '' ? undefined : inline;
  }
  if (text === undefined) {
    if (flags.signatureOptional !== undefined || flags.signatureMaxAge !== undefined)
      throw new IdempotencyConfigInvalidError(
        '--signature-optional and --signature-max-age need keys: --signature-keys FILE or IDEMPO_SIGNATURE_KEYS.',
      );
    return undefined;
  }
  let keys: ReturnType<typeof parseKeySet>;
  try {
    keys = parseKeySet(text);
  } catch (error) {
    throw new IdempotencyConfigInvalidError(`${source}: ${(error as Error).message}`, { cause: error });
  }
  const optional = flags.signatureOptional === true || flags.signatureOptional === 'true';
  return {
    keys,
    required: !optional,
    ...(flags.signatureMaxAge === undefined ? {} : { maxAge: flags.signatureMaxAge as Duration }),
  };
}
