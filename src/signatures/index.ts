/**
 * HTTP Message Signatures (RFC 9421) with Content-Digest (RFC 9530) for idempotent requests: a
 * signature that covers the method, the target, the `Idempotency-Key` and the body's digest
 * binds the key to its request, so it cannot be moved to another one, and a `created` window
 * bounds replays of the signed message. The engine verifies (`signatures` option), the client
 * signs (`signing` option). WebCrypto only: it loads in a browser.
 *
 * @module
 */
export {
  type KeyMaterial,
  type NamedSignatureKey,
  parseKeySet,
  type SignatureAlgorithm,
  type SignatureKey,
} from './keys.js';
export { DEFAULT_SIGNED_COMPONENTS, type SignRequestOptions, signRequest } from './sign.js';
export { type SignedRequestView, signatureBase } from './signature-base.js';
export { type SignatureKeyLookup, type Verified, type VerifyPolicy, verifyRequest } from './verify.js';
