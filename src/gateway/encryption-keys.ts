/**
 * The gateway's encryption-at-rest keys: a key set file (`--encryption-keys FILE`, or
 * `IDEMPO_ENCRYPTION_KEYS_FILE`) or the key set itself in the environment
 * (`IDEMPO_ENCRYPTION_KEYS`), never argv, where every user of the machine could read them in the
 * process list. `idempo serve` and `idempo keys` read them the same way.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { type EncryptionOptions, parseEncryptionKeys } from '../stores/encrypted.js';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/**
 * The `encryptStore` options from `--encryption-keys` (a file path) or `IDEMPO_ENCRYPTION_KEYS`,
 * or `undefined` when neither is set. Throws {@link IdempotencyConfigInvalidError} for an
 * unreadable or malformed key set, or for both being given.
 *
 * @example
 * ```ts
 * const encryption = encryptionOptionsFrom('./encryption-keys.json', process.env);
 * ```
 */
export function encryptionOptionsFrom(
  file: string | undefined,
  env: Record<string, string | undefined>,
): EncryptionOptions | undefined {
  const inline = env.IDEMPO_ENCRYPTION_KEYS;
  if (file !== undefined && inline !== undefined && inline !== '')
    throw new IdempotencyConfigInvalidError(
      'encryption keys: give them in one place, --encryption-keys FILE (IDEMPO_ENCRYPTION_KEYS_FILE) or IDEMPO_ENCRYPTION_KEYS, not both.',
    );
  let text: string;
  let source: string;
  if (file !== undefined) {
    source = `--encryption-keys ${file}`;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new IdempotencyConfigInvalidError(
        `--encryption-keys: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? error}).`,
      );
    }
  } else if (inline !== undefined && inline !== '') {
    source = 'IDEMPO_ENCRYPTION_KEYS';
    text = inline;
  } else return undefined;
  try {
    return parseEncryptionKeys(text);
  } catch (error) {
    throw new IdempotencyConfigInvalidError(`${source}: ${(error as Error).message}`, { cause: error });
  }
}
