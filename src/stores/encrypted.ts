/**
 * Encryption at rest: a wrapper around any store that seals what a store dump would give away.
 *
 * - **Responses and step results** are sealed with AES-256-GCM. The associated data binds each
 *   ciphertext to its record (the scoped key hash), to what it is (the response, or the step of
 *   that name) and to its key id, so a ciphertext altered, or moved to another record or step,
 *   fails authentication. A record that fails is an error ({@link IdempotencyRecordUnreadableError}),
 *   never a replay. The whole response is sealed, status included: nothing but a replay needs it.
 * - **Key ids** travel in each ciphertext, so keys rotate: records are sealed with the current key,
 *   older ones still open with theirs, and {@link EncryptedStore.reencrypt} moves completed
 *   records forward (through the store's optional `rewriteResponse`, a compare-and-swap).
 * - **Fingerprints** are keyed: the store keeps `HMAC-SHA256(fingerprintKey, fingerprint)`, so a
 *   dump does not let anyone test guesses of a low-entropy body. The same input gives the same
 *   HMAC, so a reused key is still a mismatch. The fingerprint key is separate from the
 *   encryption keys and does not rotate with them (a record stays bound to its fingerprint for its
 *   whole life); `previousFingerprintKeys` lets it change without breaking records made before.
 *
 * Envelope (bytes; a step's is base64 text): `0x01 | id length | key id | 12-byte IV | ciphertext | 16-byte tag`.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import {
  type ClaimInput,
  type ClaimResult,
  type FencedResult,
  IdempotencyConfigInvalidError,
  IdempotencyRecordUnreadableError,
  type IdempotencyStore,
  type RecordInfo,
  type RecordPage,
  type RecordQuery,
  type StoredResponse,
  type SyncStoreOperations,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';

export { IdempotencyRecordUnreadableError } from '../vocabulary/index.js';

/** A 32-byte key: bytes, or their base64 (standard or url-safe) text. */
export type KeyMaterial = Uint8Array | string;

/** Options of {@link encryptStore}. */
export interface EncryptionOptions {
  /** AES-256 keys by id (1 to 255 bytes of UTF-8). Every id a stored record names must be here to read it. */
  keys: Readonly<Record<string, KeyMaterial>>;
  /** The id of the key new responses and steps are sealed with. */
  currentKeyId: string;
  /**
   * The HMAC key of fingerprints (at least 32 bytes). Keep it apart from the encryption keys and
   * keep it stable: records are matched by the HMAC made with it.
   */
  fingerprintKey: KeyMaterial;
  /**
   * Fingerprint keys used before `fingerprintKey`. A claim whose fingerprint mismatches under the
   * current key is tried under each of these (a round trip each), so records made before a
   * change still match. Drop them once `ttl` has passed since the change.
   * @default []
   */
  previousFingerprintKeys?: readonly KeyMaterial[];
}

/** What {@link EncryptedStore.reencrypt} did. */
export interface ReencryptReport {
  /** Records listed. */
  examined: number;
  /** Completed records moved to the current key. */
  moved: number;
  /** Completed records already under the current key. */
  current: number;
  /** Records that changed between the listing and the rewrite (completed again, deleted, expired): nothing to move. */
  changed: number;
  /** Scoped keys of completed records that failed authentication (left as they are). */
  unreadable: string[];
  /**
   * In-flight or released records holding steps. Their steps cannot be rewritten without their
   * owner's token; they go when the record completes or expires. Keep old keys until this is 0.
   */
  withSteps: number;
  /** Completed records by the key id they are sealed with, after the run. */
  byKeyId: Record<string, number>;
}

/** Options of {@link EncryptedStore.reencrypt}. */
export interface ReencryptOptions {
  /** Records per listed page. @default 100 */
  pageSize?: number;
  /** Called after each page with the report so far. */
  onProgress?: (report: ReencryptReport) => void;
}

/** A store whose responses and steps are sealed, with a re-encryption of what older keys sealed. */
export interface EncryptedStore extends IdempotencyStore {
  /**
   * Moves completed records sealed with an older key to the current one, page by page. Each
   * rewrite is a compare-and-swap on the sealed body (`rewriteResponse`), so a record that
   * completed again, was deleted or expired meanwhile is left alone. Needs the wrapped store's
   * `list` and `rewriteResponse`.
   */
  reencrypt(options?: ReencryptOptions): Promise<ReencryptReport>;
  /** The key id a completed record's response is sealed with, without opening it; `undefined` if not sealed. */
  keyIdOf(response: StoredResponse): string | undefined;
}

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** The wrapped store keeps this as the status: the real one is sealed with the rest. */
const SEALED_STATUS = 0;

function keyBytes(material: KeyMaterial, what: string, exact: boolean): Buffer {
  const bytes =
    typeof material === 'string'
      ? Buffer.from(material.trim().replace(/-/g, '+').replace(/_/g, '/'), 'base64')
      : Buffer.from(material);
  if (exact ? bytes.length !== 32 : bytes.length < 32) {
    throw new IdempotencyConfigInvalidError(
      `${what}: expected ${exact ? '' : 'at least '}32 bytes (base64 text or bytes), got ${bytes.length}; make one with: openssl rand -base64 32`,
    );
  }
  return bytes;
}

/** The associated data: what the ciphertext is, for which record, under which key. */
function aad(kind: 'response' | 'step', storeKey: string, keyId: string, name = ''): Buffer {
  return Buffer.from(`idempo/v${VERSION}\0${kind}\0${storeKey}\0${name}\0${keyId}`, 'utf8');
}

/** The response as one plaintext: status (2 bytes), header JSON length (4 bytes), header JSON, body. */
function serialize(response: StoredResponse): Buffer {
  const headers = Buffer.from(JSON.stringify(response.headers), 'utf8');
  const head = Buffer.alloc(6);
  head.writeUInt16BE(response.status, 0);
  head.writeUInt32BE(headers.length, 2);
  return Buffer.concat([head, headers, response.body]);
}

function deserialize(plain: Buffer): StoredResponse {
  const length = plain.readUInt32BE(2);
  return {
    status: plain.readUInt16BE(0),
    headers: JSON.parse(plain.toString('utf8', 6, 6 + length)) as [string, string][],
    body: new Uint8Array(plain.subarray(6 + length)),
  };
}

/** The key id of an envelope, or `undefined` when the bytes are not one. */
function envelopeKeyId(bytes: Uint8Array): string | undefined {
  if (bytes.length < 2 + IV_BYTES + TAG_BYTES || bytes[0] !== VERSION) return undefined;
  const idLength = bytes[1] as number;
  if (idLength === 0 || bytes.length < 2 + idLength + IV_BYTES + TAG_BYTES) return undefined;
  return asBuffer(bytes).toString('utf8', 2, 2 + idLength);
}

/**
 * Wraps `store` so responses and step results are sealed with AES-256-GCM and fingerprints are
 * keyed with an HMAC. Put it directly around the store (under any observer's wrapper). The
 * memory store's synchronous fast path is kept: the wrapper offers its own `sync`, sealing in it.
 *
 * @example
 * ```ts
 * import { encryptStore } from 'idempo/encryption';
 * const store = encryptStore(createSqliteStore({ path: './idempo.db' }), {
 *   keys: { '2025-01': process.env.IDEMPO_KEY_2025_01 as string },
 *   currentKeyId: '2025-01',
 *   fingerprintKey: process.env.IDEMPO_FINGERPRINT_KEY as string,
 * });
 * ```
 */
export function encryptStore(store: IdempotencyStore, options: EncryptionOptions): EncryptedStore {
  const keys = new Map<string, Buffer>();
  for (const [id, material] of Object.entries(options.keys)) {
    const idBytes = Buffer.byteLength(id, 'utf8');
    if (idBytes === 0 || idBytes > 255)
      throw new IdempotencyConfigInvalidError(`encryption keys: a key id must be 1 to 255 bytes, got ${idBytes}`);
    keys.set(id, keyBytes(material, `encryption key ${JSON.stringify(id)}`, true));
  }
  const currentId = options.currentKeyId;
  const currentKey = keys.get(currentId);
  if (currentKey === undefined) {
    throw new IdempotencyConfigInvalidError(
      `encryption: currentKeyId ${JSON.stringify(currentId)} is not among the keys (${[...keys.keys()].join(', ') || 'none'})`,
    );
  }
  const fingerprintKeys = [options.fingerprintKey, ...(options.previousFingerprintKeys ?? [])].map((material, i) =>
    keyBytes(material, i === 0 ? 'fingerprintKey' : `previousFingerprintKeys[${i - 1}]`, false),
  );
  for (const fpKey of fingerprintKeys) {
    for (const key of keys.values())
      if (fpKey.equals(key))
        throw new IdempotencyConfigInvalidError(
          'encryption: the fingerprint key must differ from every encryption key',
        );
  }
  const idHeader = Buffer.concat([Buffer.from([VERSION, Buffer.byteLength(currentId)]), Buffer.from(currentId)]);

  function seal(plain: Buffer, data: Buffer): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', currentKey as Buffer, iv);
    cipher.setAAD(data);
    const sealed = Buffer.concat([idHeader, iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
    return sealed;
  }

  function open(envelope: Uint8Array, dataOf: (keyId: string) => Buffer, what: string): Buffer {
    const keyId = envelopeKeyId(envelope);
    if (keyId === undefined)
      throw new IdempotencyRecordUnreadableError(
        `${what} is not sealed (written before encryption was turned on, or altered); it is never replayed.`,
      );
    const key = keys.get(keyId);
    if (key === undefined)
      throw new IdempotencyRecordUnreadableError(
        `${what} is sealed with key ${JSON.stringify(keyId)}, which the key set does not hold; add it back (and run the re-encryption) to read it.`,
      );
    const start = 2 + Buffer.byteLength(keyId);
    const bytes = asBuffer(envelope);
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(start, start + IV_BYTES));
      decipher.setAAD(dataOf(keyId));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      return Buffer.concat([
        decipher.update(bytes.subarray(start + IV_BYTES, bytes.length - TAG_BYTES)),
        decipher.final(),
      ]);
    } catch (error) {
      throw new IdempotencyRecordUnreadableError(
        `${what} failed authentication under key ${JSON.stringify(keyId)}: altered, or moved from another record; it is never replayed.`,
        { cause: error },
      );
    }
  }

  const sealResponse = (storeKey: string, response: StoredResponse): StoredResponse => ({
    status: SEALED_STATUS,
    headers: [],
    body: seal(serialize(response), aad('response', storeKey, currentId)),
  });

  function openResponse(storeKey: string, sealed: StoredResponse): StoredResponse {
    const plain = open(sealed.body, (id) => aad('response', storeKey, id), `The stored response of record ${storeKey}`);
    try {
      return deserialize(plain);
    } catch (error) {
      throw new IdempotencyRecordUnreadableError(`The stored response of record ${storeKey} is malformed.`, {
        cause: error,
      });
    }
  }

  const sealStep = (storeKey: string, name: string, value: string): string =>
    seal(Buffer.from(value, 'utf8'), aad('step', storeKey, currentId, name)).toString('base64');

  function openSteps(storeKey: string, steps: Record<string, string>): Record<string, string> {
    const opened: Record<string, string> = {};
    for (const [name, value] of Object.entries(steps)) {
      opened[name] = open(
        Buffer.from(value, 'base64'),
        (id) => aad('step', storeKey, id, name),
        `Step ${JSON.stringify(name)} of record ${storeKey}`,
      ).toString('utf8');
    }
    return opened;
  }

  const hmacs = fingerprintKeys.map(
    (key) => (fingerprint: string) =>
      createHmac('sha256', key).update('idempo/fingerprint\0').update(fingerprint, 'utf8').digest('hex'),
  );
  const keyed = (input: ClaimInput, i: number): ClaimInput => ({
    ...input,
    fingerprint: (hmacs[i] as (fp: string) => string)(input.fingerprint),
  });

  /**
   * Opens what a claim returned. A claim that took the key but whose steps fail authentication
   * hands the key back (steps kept), so it does not sit in flight until its lease passes; every
   * later claim meets the same error, and nothing runs. `handedBack` is the release's promise.
   */
  function opened(
    input: ClaimInput,
    result: ClaimResult,
  ): { result: ClaimResult } | { error: unknown; handedBack?: Promise<unknown> } {
    try {
      if (result.status === 'replay')
        return { result: { status: 'replay', response: openResponse(input.key, result.response) } };
      if (result.status === 'acquired' && Object.keys(result.steps).length > 0) {
        return { result: { ...result, steps: openSteps(input.key, result.steps) } };
      }
      return { result };
    } catch (error) {
      if (result.status !== 'acquired') return { error };
      return { error, handedBack: store.release(input.key, result.token, input.ttlMs).catch(() => {}) };
    }
  }

  async function claim(input: ClaimInput): Promise<ClaimResult> {
    let result = await store.claim(keyed(input, 0));
    // A record made under an earlier fingerprint key: match it with that key's HMAC.
    for (let i = 1; result.status === 'mismatch' && i < hmacs.length; i++) result = await store.claim(keyed(input, i));
    const open = opened(input, result);
    if ('result' in open) return open.result;
    // Awaited, so a caller that tries again once this claim has failed finds the key released.
    await open.handedBack;
    throw open.error;
  }

  function infoOpened(info: RecordInfo): RecordInfo {
    return info.response === undefined ? info : { ...info, response: openResponse(info.key, info.response) };
  }

  async function reencrypt(reencryptOptions: ReencryptOptions = {}): Promise<ReencryptReport> {
    const { list, rewriteResponse } = store;
    if (list === undefined || rewriteResponse === undefined) {
      throw new IdempotencyConfigInvalidError(
        're-encryption needs a store that can list its records and rewrite a response (list, rewriteResponse)',
      );
    }
    const report: ReencryptReport = {
      examined: 0,
      moved: 0,
      current: 0,
      changed: 0,
      unreadable: [],
      withSteps: 0,
      byKeyId: {},
    };
    const count = (id: string) => {
      report.byKeyId[id] = (report.byKeyId[id] ?? 0) + 1;
    };
    let cursor: string | undefined;
    do {
      const page: RecordPage = await list.call(store, {
        limit: reencryptOptions.pageSize ?? 100,
        ...(cursor === undefined ? {} : { cursor }),
      } satisfies RecordQuery);
      for (const record of page.records) {
        report.examined++;
        if (record.state !== 'completed' || record.response === undefined) {
          if (record.steps.length > 0) report.withSteps++;
          continue;
        }
        const sealed = record.response;
        const keyId = envelopeKeyId(sealed.body);
        if (keyId === currentId) {
          report.current++;
          count(currentId);
          continue;
        }
        let plain: StoredResponse;
        try {
          plain = openResponse(record.key, sealed);
        } catch (error) {
          if (!(error instanceof IdempotencyRecordUnreadableError)) throw error;
          report.unreadable.push(record.key);
          if (keyId !== undefined) count(keyId);
          continue;
        }
        const result = await rewriteResponse.call(store, record.key, sealed.body, sealResponse(record.key, plain));
        if (result === 'ok') {
          report.moved++;
          count(currentId);
        } else report.changed++;
      }
      cursor = page.cursor;
      reencryptOptions.onProgress?.(report);
    } while (cursor !== undefined);
    return report;
  }

  const encrypted: EncryptedStore = {
    claim,
    complete: (key, token, response, ttlMs) => store.complete(key, token, sealResponse(key, response), ttlMs),
    release: (key, token, ttlMs) => store.release(key, token, ttlMs),
    renew: (key, token, leaseMs) => store.renew(key, token, leaseMs),
    saveStep: (key, token, name, value): Promise<FencedResult> =>
      store.saveStep(key, token, name, sealStep(key, name, value)),
    reencrypt,
    keyIdOf: (response) => envelopeKeyId(response.body),
  };
  if (store.waitForChange) {
    const { waitForChange } = store;
    encrypted.waitForChange = (key, timeoutMs) => waitForChange.call(store, key, timeoutMs);
  }
  if (store.close) {
    const { close } = store;
    encrypted.close = () => close.call(store);
  }
  if (store.ping) {
    const { ping } = store;
    encrypted.ping = () => ping.call(store);
  }
  if (store.inspect) {
    const { inspect } = store;
    encrypted.inspect = async (key) => {
      const info = await inspect.call(store, key);
      return info === undefined ? undefined : infoOpened(info);
    };
  }
  if (store.list) {
    const { list } = store;
    encrypted.list = async (query) => {
      const page = await list.call(store, query);
      return { ...page, records: page.records.map(infoOpened) };
    };
  }
  if (store.delete) {
    const { delete: remove } = store;
    encrypted.delete = (key, deleteOptions) => remove.call(store, key, deleteOptions);
  }
  if (store.rewriteResponse && store.inspect) {
    const { rewriteResponse, inspect } = store;
    // The contract's compare-and-swap on plaintext: open the stored response, compare its body, and
    // swap on the sealed body that was read, so a completion in between still wins.
    encrypted.rewriteResponse = async (key, expectedBody, replacement) => {
      const info = await inspect.call(store, key);
      if (info?.state !== 'completed' || info.response === undefined) return 'changed';
      const body = openResponse(key, info.response).body;
      if (!asBuffer(body).equals(expectedBody)) return 'changed';
      return rewriteResponse.call(store, key, info.response.body, sealResponse(key, replacement));
    };
  }
  // The inner store's synchronous operations would bypass sealing: the engine uses `sync` only when
  // `sync.store` is the store it was given, so the inner one's never applies. Offer sealing ones.
  const inner = store.sync;
  if (inner !== undefined && inner.store === store) {
    const sync: SyncStoreOperations = {
      store: encrypted,
      claim(input) {
        let result = inner.claim(keyed(input, 0));
        for (let i = 1; result.status === 'mismatch' && i < hmacs.length; i++) result = inner.claim(keyed(input, i));
        const open = opened(input, result);
        if ('result' in open) return open.result;
        throw open.error;
      },
      complete: (key, token, response, ttlMs) => inner.complete(key, token, sealResponse(key, response), ttlMs),
    };
    Object.defineProperty(encrypted, 'sync', { value: sync, enumerable: false });
  }
  return encrypted;
}

/** The key set as a file holds it (`--encryption-keys`, `IDEMPO_ENCRYPTION_KEYS`). */
interface KeySetFile {
  current: string;
  keys: Record<string, string>;
  fingerprintKey: string;
  previousFingerprintKeys?: string[];
}

/**
 * Parses a key set file: JSON with `current` (a key id), `keys` (base64 32-byte keys by id),
 * `fingerprintKey` (base64, at least 32 bytes) and optionally `previousFingerprintKeys`. Throws
 * {@link IdempotencyConfigInvalidError} naming what is wrong; never echoes a key.
 *
 * @example
 * ```ts
 * const options = parseEncryptionKeys(readFileSync('encryption-keys.json', 'utf8'));
 * const store = encryptStore(createMemoryStore(), options);
 * ```
 */
export function parseEncryptionKeys(text: string): EncryptionOptions {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new IdempotencyConfigInvalidError('encryption keys: not valid JSON');
  }
  const file = parsed as Partial<KeySetFile> | null;
  const isText = (value: unknown): value is string => typeof value === 'string' && value !== '';
  if (
    typeof file !== 'object' ||
    file === null ||
    !isText(file.current) ||
    typeof file.keys !== 'object' ||
    file.keys === null ||
    !Object.values(file.keys).every(isText) ||
    !isText(file.fingerprintKey) ||
    !(
      file.previousFingerprintKeys === undefined ||
      (Array.isArray(file.previousFingerprintKeys) && file.previousFingerprintKeys.every(isText))
    )
  ) {
    throw new IdempotencyConfigInvalidError(
      'encryption keys: expected {"current": "<id>", "keys": {"<id>": "<base64 of 32 bytes>", …}, "fingerprintKey": "<base64>", "previousFingerprintKeys"?: ["<base64>"]}',
    );
  }
  return {
    keys: file.keys,
    currentKeyId: file.current,
    fingerprintKey: file.fingerprintKey,
    ...(file.previousFingerprintKeys === undefined ? {} : { previousFingerprintKeys: file.previousFingerprintKeys }),
  };
}
