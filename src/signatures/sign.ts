/**
 * Signing a request (RFC 9421) with its body's `Content-Digest` (RFC 9530): what
 * `createIdempotentFetch` does to each attempt when it is given a key. WebCrypto only, so it
 * runs in browsers.
 *
 * @module
 */
import { digest, type NamedSignatureKey, signBytes } from './keys.js';
import { type SignedRequestView, signatureBase } from './signature-base.js';
import { type InnerList, serializeBareItem, serializeInnerList, toBase64 } from './structured-fields.js';

/** How {@link signRequest} signs. */
export interface SignRequestOptions {
  /**
   * The components the signature covers. Fields are lower-case header names; derived ones start
   * with `@`. A field the request lacks is left out; `content-digest` is added for a body.
   * @default ['@method', '@authority', '@path', '@query', 'idempotency-key', 'content-digest', 'content-type']
   */
  readonly components?: readonly string[];
  /**
   * How long the signature is valid after `created`, in seconds (an `expires` parameter); none by default.
   * @default undefined (the verifier's `maxAge` decides)
   */
  readonly expiresIn?: number;
  /**
   * The signature's label in `Signature-Input` and `Signature`.
   * @default 'idempo'
   */
  readonly label?: string;
  /** The time to sign at, in seconds since the epoch; now by default. */
  readonly created?: number;
}

/** The components a client signs by default: enough to bind a key to its request, and no more. */
export const DEFAULT_SIGNED_COMPONENTS = [
  '@method',
  '@authority',
  '@path',
  '@query',
  'idempotency-key',
  'content-digest',
  'content-type',
] as const;

/**
 * Signs a request in place: sets `Content-Digest` (SHA-256 of the body, when there is one),
 * `Signature-Input` and `Signature`.
 *
 * @example
 * ```ts
 * const headers = new Headers({ 'idempotency-key': 'k1', 'content-type': 'application/json' });
 * await signRequest({ method: 'POST', url: 'https://api.example.com/payments', headers, body }, {
 *   keyid: 'client-1', alg: 'ed25519', key: privateJwk,
 * });
 * ```
 */
export async function signRequest(
  request: {
    readonly method: string;
    readonly url: string;
    readonly headers: Headers;
    readonly body: Uint8Array | undefined;
  },
  key: NamedSignatureKey,
  options: SignRequestOptions = {},
): Promise<void> {
  const { headers, body } = request;
  const components = options.components ?? DEFAULT_SIGNED_COMPONENTS;
  if (body !== undefined && components.includes('content-digest')) {
    headers.set('content-digest', `sha-256=${serializeBareItem(await digest('SHA-256', body))}`);
  }
  // A relative URL (a browser page's fetch('/payments')) is read against the page.
  const url = new URL(request.url, typeof location === 'undefined' ? undefined : location.href);
  const view: SignedRequestView = {
    method: sentMethod(request.method),
    scheme: url.protocol.slice(0, -1),
    authority: url.host,
    target: url.pathname + url.search,
    header: (name) => headers.get(name) ?? undefined,
  };
  const covered = components.filter((name) => name.startsWith('@') || headers.has(name));
  const created = options.created ?? Math.floor(Date.now() / 1_000);
  const params = new Map<string, number | string>([['created', created]]);
  if (options.expiresIn !== undefined) params.set('expires', created + options.expiresIn);
  params.set('keyid', key.keyid);
  params.set('alg', key.alg);
  const list: InnerList = { items: covered.map((name) => ({ value: name, params: new Map() })), params };
  const signature = await signBytes(key, signatureBase(view, list));
  const label = options.label ?? 'idempo';
  headers.set('signature-input', `${label}=${serializeInnerList(list)}`);
  headers.set('signature', `${label}=:${toBase64(signature)}:`);
}

/** The method as fetch sends it: the standard ones upper-cased, any other as written (`patch` stays). */
function sentMethod(method: string): string {
  const upper = method.toUpperCase();
  return ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT'].includes(upper) ? upper : method;
}
