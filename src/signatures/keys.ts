/**
 * Keys for HTTP Message Signatures, through WebCrypto (`crypto.subtle`), so signing works in a
 * browser and verifying needs nothing from Node: HMAC-SHA256 with a shared secret, Ed25519 with a
 * key pair. Keys are given as JWKs (`{ kty: 'oct', k }`, `{ kty: 'OKP', crv: 'Ed25519', x, d }`),
 * raw bytes (an HMAC secret, or an Ed25519 public key), or `CryptoKey`s.
 *
 * @module
 */
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/** The RFC 9421 algorithms idempo signs and verifies with (the `alg` parameter's values). */
export type SignatureAlgorithm = 'hmac-sha256' | 'ed25519';

/** Key material as {@link SignatureKey} takes it. */
export type KeyMaterial = JsonWebKey | Uint8Array | CryptoKey;

/**
 * A key that verifies (or, with its private part, makes) signatures.
 *
 * @example
 * ```ts
 * const key: SignatureKey = { alg: 'hmac-sha256', key: new TextEncoder().encode(process.env.SHARED_SECRET) };
 * ```
 */
export interface SignatureKey {
  /** The algorithm: `'hmac-sha256'` (a shared secret) or `'ed25519'` (a key pair). */
  readonly alg: SignatureAlgorithm;
  /**
   * HMAC: the secret as bytes or a JWK `{ kty: 'oct', k }`. Ed25519: a JWK
   * `{ kty: 'OKP', crv: 'Ed25519', x }` (with `d` to sign), or the 32 public-key bytes to verify.
   */
  readonly key: KeyMaterial;
}

/** A key with its `keyid`, as a client signs with it or a key list names it. */
export interface NamedSignatureKey extends SignatureKey {
  /** The `keyid` parameter the signature carries and the verifier looks the key up by. */
  readonly keyid: string;
}

type Usage = 'sign' | 'verify';

const imported = new WeakMap<object, Map<Usage, Promise<CryptoKey>>>();

function subtle(): SubtleCrypto {
  const crypto = (globalThis as { crypto?: Crypto }).crypto;
  if (crypto?.subtle === undefined)
    throw new IdempotencyConfigInvalidError(
      'HTTP Message Signatures need WebCrypto (crypto.subtle), which is missing here.',
    );
  return crypto.subtle;
}

/** The `CryptoKey` for `key` and `usage`, imported once per key object. */
export function cryptoKey(key: SignatureKey, usage: Usage): Promise<CryptoKey> {
  let byUsage = imported.get(key);
  if (byUsage === undefined) {
    byUsage = new Map();
    imported.set(key, byUsage);
  }
  let promise = byUsage.get(usage);
  if (promise === undefined) {
    promise = importKey(key, usage);
    // A key that failed to import is tried again next time rather than failing forever.
    promise.catch(() => byUsage.delete(usage));
    byUsage.set(usage, promise);
  }
  return promise;
}

async function importKey({ alg, key }: SignatureKey, usage: Usage): Promise<CryptoKey> {
  if (isCryptoKey(key)) return key;
  const algorithm = alg === 'hmac-sha256' ? { name: 'HMAC', hash: 'SHA-256' } : { name: 'Ed25519' };
  if (alg !== 'hmac-sha256' && alg !== 'ed25519')
    throw new IdempotencyConfigInvalidError(
      `signature key: unknown alg ${JSON.stringify(alg)}; expected hmac-sha256 or ed25519.`,
    );
  try {
    if (key instanceof Uint8Array) {
      if (alg === 'ed25519' && usage === 'sign')
        throw new IdempotencyConfigInvalidError('an Ed25519 signing key must be a JWK with its private part (d).');
      return await subtle().importKey('raw', key as Uint8Array<ArrayBuffer>, algorithm, false, [usage]);
    }
    // A verifier given a private JWK uses its public part only.
    const jwk: JsonWebKey = { ...key };
    if (alg === 'ed25519' && usage === 'verify') delete jwk.d;
    delete jwk.key_ops;
    delete jwk.alg;
    delete jwk.use;
    return await subtle().importKey('jwk', jwk, algorithm, false, [usage]);
  } catch (error) {
    if (error instanceof IdempotencyConfigInvalidError) throw error;
    throw new IdempotencyConfigInvalidError(
      `signature key (${alg}) cannot be imported for ${usage}: ${String(error)}`,
      {
        cause: error,
      },
    );
  }
}

function isCryptoKey(key: KeyMaterial): key is CryptoKey {
  return typeof CryptoKey !== 'undefined' && key instanceof CryptoKey;
}

/** Signs `data` with `key`. */
export async function signBytes(key: SignatureKey, data: Uint8Array): Promise<Uint8Array> {
  const name = key.alg === 'hmac-sha256' ? 'HMAC' : 'Ed25519';
  return new Uint8Array(await subtle().sign(name, await cryptoKey(key, 'sign'), data as Uint8Array<ArrayBuffer>));
}

/** Whether `signature` is `key`'s over `data` (HMAC compared in constant time by WebCrypto). */
export async function verifyBytes(key: SignatureKey, data: Uint8Array, signature: Uint8Array): Promise<boolean> {
  const name = key.alg === 'hmac-sha256' ? 'HMAC' : 'Ed25519';
  return subtle().verify(
    name,
    await cryptoKey(key, 'verify'),
    signature as Uint8Array<ArrayBuffer>,
    data as Uint8Array<ArrayBuffer>,
  );
}

/** SHA-256 or SHA-512 of `data`. */
export async function digest(algorithm: 'SHA-256' | 'SHA-512', data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest(algorithm, data as Uint8Array<ArrayBuffer>));
}

/**
 * Reads a key set: a JWK Set (`{ "keys": [{ "kid": "…", "kty": "oct", "k": "…" }, …] }`), each key
 * named by `kid` and typed by its `kty` (`oct` → hmac-sha256, `OKP`/`Ed25519` → ed25519) or an
 * explicit `alg`. Throws {@link IdempotencyConfigInvalidError} naming what is wrong.
 *
 * @example
 * ```ts
 * const keys = parseKeySet(readFileSync('signature-keys.json', 'utf8'));
 * createIdempotency({ store, signatures: { keys } });
 * ```
 */
export function parseKeySet(text: string): NamedSignatureKey[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new IdempotencyConfigInvalidError(`signature keys: not JSON (${(error as Error).message}).`);
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0)
    throw new IdempotencyConfigInvalidError('signature keys: expected a JWK Set, {"keys": [{"kid": …, "kty": …}, …]}.');
  return keys.map((jwk: unknown, i) => {
    const entry = jwk as JsonWebKey & { kid?: unknown };
    if (typeof entry !== 'object' || entry === null || typeof entry.kid !== 'string' || entry.kid === '')
      throw new IdempotencyConfigInvalidError(`signature keys: key ${i} has no "kid" (its keyid).`);
    const alg =
      entry.alg === 'hmac-sha256' || entry.alg === 'ed25519'
        ? entry.alg
        : entry.kty === 'oct'
          ? 'hmac-sha256'
          : entry.kty === 'OKP' && entry.crv === 'Ed25519'
            ? 'ed25519'
            : undefined;
    if (alg === undefined)
      throw new IdempotencyConfigInvalidError(
        `signature keys: key ${JSON.stringify(entry.kid)} is neither an HMAC secret (kty "oct") nor an Ed25519 key (kty "OKP", crv "Ed25519").`,
      );
    const { kid, ...key } = entry;
    return { keyid: kid as string, alg, key };
  });
}
