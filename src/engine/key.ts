import { IdempotencyKeyInvalidError } from '../vocabulary/index.js';

/**
 * Parses an `Idempotency-Key` header value: a raw token of visible ASCII, or a Structured Field
 * string (`"abc"`, RFC 8941), which means its content. Throws {@link IdempotencyKeyInvalidError}
 * with a message saying what is wrong.
 *
 * @example
 * ```ts
 * parseIdempotencyKey('"8e03978e-40d5"', 255); // '8e03978e-40d5'
 * ```
 */
export function parseIdempotencyKey(raw: string, maxLength: number): string {
  const value = raw.trim();
  const key = value.startsWith('"') ? parseSfString(value) : value;
  if (key.length === 0) throw new IdempotencyKeyInvalidError('The Idempotency-Key header is empty.');
  if (key.length > maxLength) {
    throw new IdempotencyKeyInvalidError(
      `The Idempotency-Key is ${key.length} characters long; at most ${maxLength} are accepted.`,
    );
  }
  if (!value.startsWith('"') && !isVisibleAscii(key)) {
    throw new IdempotencyKeyInvalidError(
      'The Idempotency-Key must be visible ASCII (0x21-0x7E) without commas or spaces, which come from repeated headers; send one key per request, or quote it as a string ("…").',
    );
  }
  return key;
}

function isVisibleAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x2c) return false;
  }
  return true;
}

// RFC 8941 §4.2.5: printable ASCII between DQUOTEs, with \" and \\ as the only escapes.
function parseSfString(value: string): string {
  let out = '';
  for (let i = 1; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x5c) {
      const next = value[i + 1];
      if (next !== '"' && next !== '\\') {
        throw new IdempotencyKeyInvalidError(
          'The Idempotency-Key string has an invalid escape: only \\" and \\\\ are allowed.',
        );
      }
      out += next;
      i++;
    } else if (c === 0x22) {
      if (i !== value.length - 1) {
        throw new IdempotencyKeyInvalidError('The Idempotency-Key has characters after its closing quote.');
      }
      return out;
    } else if (c < 0x20 || c > 0x7e) {
      throw new IdempotencyKeyInvalidError('The Idempotency-Key string must be printable ASCII.');
    } else {
      out += value[i];
    }
  }
  throw new IdempotencyKeyInvalidError('The Idempotency-Key string has no closing quote.');
}
