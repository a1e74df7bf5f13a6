/**
 * The signature base of RFC 9421 §2.5: one line per covered component, `"name": value`, then
 * `"@signature-params": (…);created=…;keyid=…`. Signer and verifier build it here alike.
 *
 * @module
 */
import { type InnerList, type Item, serializeInnerList, serializeString } from './structured-fields.js';

/** A request as the signature base reads it. */
export interface SignedRequestView {
  /** The method, as sent. */
  readonly method: string;
  /** The scheme, `https` or `http`. */
  readonly scheme: string;
  /** The authority (host and port, if not the default), lower case. */
  readonly authority: string | undefined;
  /** Origin-form target: path and query. */
  readonly target: string;
  /** A header's value, several joined with `, `; name in lower case. */
  header(name: string): string | undefined;
}

/** Raised when a covered component cannot be given a value: the signature cannot verify. */
export class ComponentError extends Error {}

/** The derived components (RFC 9421 §2.2) idempo reads. */
export const DERIVED_COMPONENTS = [
  '@method',
  '@target-uri',
  '@authority',
  '@scheme',
  '@request-target',
  '@path',
  '@query',
] as const;

/** The value of one covered component. */
export function componentValue(request: SignedRequestView, item: Item): string {
  const name = item.value;
  if (typeof name !== 'string') throw new ComponentError('a covered component is not a string');
  // Parameters (sf, key, bs, req, name, tr) change how a value is read; idempo signs and
  // verifies plain components only, so a parameter it does not apply must not pass unnoticed.
  if (item.params.size > 0)
    throw new ComponentError(`component ${serializeString(name)} has parameters idempo does not support`);
  const queryAt = request.target.indexOf('?');
  const path = queryAt === -1 ? request.target : request.target.slice(0, queryAt);
  switch (name) {
    case '@method':
      return request.method;
    case '@target-uri':
      return `${request.scheme}://${authorityOf(request)}${request.target}`;
    case '@authority':
      return authorityOf(request);
    case '@scheme':
      return request.scheme.toLowerCase();
    case '@request-target':
      return request.target;
    case '@path':
      return path === '' ? '/' : path;
    case '@query':
      return queryAt === -1 ? '?' : request.target.slice(queryAt);
    default: {
      if (name.startsWith('@')) throw new ComponentError(`component ${name} is not supported`);
      if (name !== name.toLowerCase()) throw new ComponentError(`component ${serializeString(name)} is not lower case`);
      const value = request.header(name);
      if (value === undefined) throw new ComponentError(`the request has no ${name} field, which the signature covers`);
      return value.trim();
    }
  }
}

function authorityOf(request: SignedRequestView): string {
  if (request.authority === undefined || request.authority === '')
    throw new ComponentError('the request has no authority (Host)');
  return request.authority.toLowerCase();
}

/** The signature base for `covered` (the `Signature-Input` member), as bytes to sign or verify. */
export function signatureBase(request: SignedRequestView, covered: InnerList): Uint8Array {
  const seen = new Set<string>();
  let base = '';
  for (const item of covered.items) {
    const identifier = serializeString(String(item.value));
    if (seen.has(identifier)) throw new ComponentError(`component ${identifier} is covered twice`);
    seen.add(identifier);
    const value = componentValue(request, item);
    // A value with a line break would let one component forge another's line.
    if (/[\r\n]/.test(value)) throw new ComponentError(`component ${identifier} holds a line break`);
    base += `${identifier}: ${value}\n`;
  }
  base += `"@signature-params": ${serializeInnerList(covered)}`;
  return new TextEncoder().encode(base);
}
