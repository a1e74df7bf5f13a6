/**
 * Verifying a signed request (RFC 9421) and its `Content-Digest` (RFC 9530) before anything is
 * claimed: the engine calls {@link verifyRequest} for every keyed request when `signatures` is
 * set, and answers `401` with the error it throws.
 *
 *   no Signature-Input / Signature ── required? ── yes ─▶ IDEMPO_SIGNATURE_MISSING
 *   fields malformed ─────────────────────────────────▶ IDEMPO_SIGNATURE_INVALID
 *   for each signature (label):
 *     covers @method, the target, the key header, content-digest (for a body)?  no ─▶ INVALID
 *     created within maxAge (and not ahead by more than clockSkew), expires not passed?  no ─▶ EXPIRED
 *     keyid known, alg its key's?  no ─▶ INVALID
 *     Content-Digest matches the body?  no ─▶ INVALID
 *     signature verifies over the signature base?  yes ─▶ accepted
 *
 * @module
 */
import {
  IdempotencyError,
  IdempotencySignatureExpiredError,
  IdempotencySignatureInvalidError,
  IdempotencySignatureMissingError,
} from '../vocabulary/index.js';
import { digest, type SignatureKey, verifyBytes } from './keys.js';
import { ComponentError, type SignedRequestView, signatureBase } from './signature-base.js';
import {
  type Dictionary,
  type InnerList,
  isInnerList,
  parseDictionary,
  StructuredFieldError,
} from './structured-fields.js';

/** Looks a key up by the `keyid` a signature names; `undefined` for a key it does not know. */
export type SignatureKeyLookup = (keyid: string) => SignatureKey | undefined | Promise<SignatureKey | undefined>;

/** What {@link verifyRequest} checks, every value resolved. */
export interface VerifyPolicy {
  readonly lookup: SignatureKeyLookup;
  readonly required: boolean;
  /** Oldest `created` accepted, in seconds before now. */
  readonly maxAgeSeconds: number;
  /** How far ahead of this clock `created` may be, in seconds. */
  readonly clockSkewSeconds: number;
  /** The header that carries the idempotency key, lower case: a signature must cover it. */
  readonly keyHeader: string;
}

/** What {@link verifyRequest} found: the signature accepted, or none (allowed when not required). */
export type Verified = { readonly keyid: string; readonly label: string } | undefined;

/**
 * Verifies the request's signatures; resolves with the first one accepted, or throws the
 * reason none was (an `IdempotencySignature*Error`, status 401).
 *
 * @example
 * ```ts
 * await verifyRequest(view, bodyBytes, { lookup: (id) => keys.get(id), required: true, maxAgeSeconds: 300, clockSkewSeconds: 30, keyHeader: 'idempotency-key' });
 * ```
 */
export async function verifyRequest(
  request: SignedRequestView,
  body: Uint8Array | null,
  policy: VerifyPolicy,
  now: number = Date.now() / 1_000,
): Promise<Verified> {
  const inputField = request.header('signature-input');
  const signatureField = request.header('signature');
  if (inputField === undefined && signatureField === undefined) {
    if (!policy.required) return undefined;
    throw new IdempotencySignatureMissingError(
      'This API accepts keyed requests only when they are signed (RFC 9421 Signature-Input and Signature, covering the method, the target, the Idempotency-Key and the Content-Digest). Nothing was run.',
    );
  }
  if (inputField === undefined || signatureField === undefined)
    throw invalid('The request has one of Signature-Input and Signature but not the other.');
  let inputs: Dictionary;
  let signatures: Dictionary;
  try {
    inputs = parseDictionary(inputField);
    signatures = parseDictionary(signatureField);
  } catch (error) {
    if (!(error instanceof StructuredFieldError)) throw error;
    throw invalid(`Signature-Input or Signature is not a valid Structured Field: ${error.message}.`);
  }
  let first: IdempotencyError | undefined;
  for (const [label, covered] of inputs) {
    try {
      return await verifyOne(request, body, policy, now, label, covered, signatures);
    } catch (error) {
      if (!(error instanceof IdempotencyError)) throw error;
      first ??= error;
    }
  }
  throw first ?? invalid('Signature-Input names no signature.');
}

async function verifyOne(
  request: SignedRequestView,
  body: Uint8Array | null,
  policy: VerifyPolicy,
  now: number,
  label: string,
  covered: InnerList | { value: unknown },
  signatures: Dictionary,
): Promise<Verified> {
  if (!('items' in covered)) throw invalid(`Signature-Input member ${label} is not an inner list.`);
  const signature = signatures.get(label);
  if (signature === undefined || isInnerList(signature) || !(signature.value instanceof Uint8Array))
    throw invalid(`Signature has no byte sequence for the label ${label}.`);
  const names = new Set(covered.items.map((item) => item.value));
  const missing: string[] = [];
  if (!names.has('@method')) missing.push('@method');
  const target =
    names.has('@target-uri') ||
    (names.has('@authority') && (names.has('@request-target') || (names.has('@path') && names.has('@query'))));
  if (!target) missing.push('@target-uri (or @authority with @path and @query)');
  if (!names.has(policy.keyHeader)) missing.push(policy.keyHeader);
  const hasBody = body !== null && body.length > 0;
  if (hasBody && !names.has('content-digest')) missing.push('content-digest');
  if (missing.length > 0)
    throw invalid(
      `The signature ${label} does not cover ${missing.join(', ')}: it must bind the key to this method, target and body.`,
    );

  const { params } = covered;
  const created = params.get('created');
  const expires = params.get('expires');
  if (typeof created !== 'number' || !Number.isInteger(created))
    throw expired(`The signature ${label} has no created time; idempo accepts a signature only within maxAge of it.`);
  if (created > now + policy.clockSkewSeconds)
    throw expired(`The signature ${label} was created in the future (${created}, now ${Math.floor(now)}).`);
  if (now - created > policy.maxAgeSeconds)
    throw expired(
      `The signature ${label} was created ${Math.floor(now - created)} s ago; at most ${policy.maxAgeSeconds} s are accepted. Sign the request again.`,
    );
  if (expires !== undefined && (typeof expires !== 'number' || expires < now))
    throw expired(`The signature ${label} expired at ${String(expires)}.`);

  const keyid = params.get('keyid');
  if (typeof keyid !== 'string') throw invalid(`The signature ${label} names no keyid.`);
  const key = await policy.lookup(keyid);
  if (key === undefined) throw invalid(`The signature ${label} names a keyid this API does not know.`);
  const alg = params.get('alg');
  if (alg !== undefined && alg !== key.alg)
    throw invalid(`The signature ${label} says alg=${String(alg)}, but its key is ${key.alg}.`);

  if (names.has('content-digest')) await checkDigest(request, body);
  let base: Uint8Array;
  try {
    base = signatureBase(request, covered);
  } catch (error) {
    if (error instanceof ComponentError || error instanceof StructuredFieldError)
      throw invalid(`The signature ${label} cannot be checked: ${error.message}.`);
    throw error;
  }
  if (!(await verifyBytes(key, base, signature.value)))
    throw invalid(`The signature ${label} does not match the request.`);
  return { keyid, label };
}

/** Checks `Content-Digest` (sha-256 or sha-512; every one of those present must match). */
async function checkDigest(request: SignedRequestView, body: Uint8Array | null): Promise<void> {
  const field = request.header('content-digest');
  if (field === undefined) throw invalid('The signature covers Content-Digest, which the request lacks.');
  let digests: Dictionary;
  try {
    digests = parseDictionary(field);
  } catch (error) {
    if (!(error instanceof StructuredFieldError)) throw error;
    throw invalid(`Content-Digest is not a valid Structured Field: ${error.message}.`);
  }
  const bytes = body ?? new Uint8Array();
  let checked = 0;
  for (const [algorithm, member] of digests) {
    const name = algorithm === 'sha-256' ? 'SHA-256' : algorithm === 'sha-512' ? 'SHA-512' : undefined;
    if (name === undefined) continue;
    if (isInnerList(member) || !(member.value instanceof Uint8Array))
      throw invalid(`Content-Digest ${algorithm} is not a byte sequence.`);
    if (!equalBytes(await digest(name, bytes), member.value))
      throw invalid(`Content-Digest ${algorithm} does not match the body.`);
    checked++;
  }
  if (checked === 0) throw invalid('Content-Digest has neither sha-256 nor sha-512.');
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

function invalid(message: string): IdempotencySignatureInvalidError {
  return new IdempotencySignatureInvalidError(`${message} Nothing was run.`);
}

function expired(message: string): IdempotencySignatureExpiredError {
  return new IdempotencySignatureExpiredError(`${message} Nothing was run.`);
}
