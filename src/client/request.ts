/**
 * Turns fetch's `(input, init)` into something that can be sent again and again: a URL string,
 * the method, a `Headers`, the body read once into bytes, and the remaining init fields. Every
 * attempt then gets a fresh, plain `init`, so no attempt finds a body a previous one consumed,
 * and the injected `fetch` never has to accept a `Request` from another realm (the global
 * `Request` and undici's are different classes).
 *
 * @module
 */

/** A request read once, ready to be sent as many times as needed. */
export interface PreparedRequest {
  readonly url: string;
  /** The method as the caller spelled it (fetch upper-cases only the standard ones when sending). */
  readonly method: string;
  readonly headers: Headers;
  /** The body bytes, or `undefined` for no body. */
  readonly body: Uint8Array | undefined;
  /** The request's own `signal`, if any. */
  readonly signal: AbortSignal | undefined;
  /** Other init fields (credentials, redirect, mode, undici's `dispatcher`, …), passed through. */
  readonly rest: Readonly<Record<string, unknown>>;
}

/** Request fields copied from a `Request` input so its settings survive being re-sent as an init. */
const REQUEST_FIELDS = [
  'cache',
  'credentials',
  'integrity',
  'keepalive',
  'mode',
  'redirect',
  'referrer',
  'referrerPolicy',
] as const;

/** RFC 9110 token: what a method may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function isRequest(input: unknown): input is Request {
  // Duck-typed: a Request from undici's package or another realm fails `instanceof`.
  return typeof input === 'object' && input !== null && !(input instanceof URL) && 'url' in input && 'method' in input;
}

/**
 * Reads `input` and `init` the way `fetch` would, buffering the body. A `ReadableStream`, `Blob`
 * or `FormData` body is read exactly once here; its content type (multipart boundary included)
 * is kept, so every attempt sends identical bytes.
 */
export async function prepareRequest(
  input: string | URL | Request,
  init: RequestInit | undefined,
): Promise<PreparedRequest> {
  const { body: initBody, headers: initHeaders, method: initMethod, signal: initSignal, ...initRest } = init ?? {};
  const rest: Record<string, unknown> = {};
  let url: string;
  let method = 'GET';
  let headers: Headers;
  let signal: AbortSignal | undefined;
  let body: Uint8Array | undefined;
  let contentType: string | null = null;

  if (isRequest(input)) {
    url = input.url;
    method = input.method;
    signal = input.signal;
    for (const field of REQUEST_FIELDS) {
      // In a browser a navigation Request has mode 'navigate', which no init may carry.
      if (field === 'mode' && input.mode === 'navigate') continue;
      if (input[field] !== undefined) rest[field] = input[field];
    }
    headers = new Headers(initHeaders ?? input.headers);
    if (initBody === undefined && input.body !== null) {
      if (input.bodyUsed) throw new TypeError('idempo client: the Request body has already been read');
      body = new Uint8Array(await input.arrayBuffer());
    }
  } else {
    url = String(input);
    headers = new Headers(initHeaders);
  }

  if (initMethod !== undefined) method = initMethod;
  if (initSignal !== undefined && initSignal !== null) signal = initSignal;
  Object.assign(rest, initRest);

  if (initBody !== undefined && initBody !== null) {
    // Response reads every BodyInit (string, bytes, Blob, FormData, URLSearchParams, stream) the
    // way fetch would, and tells which Content-Type fetch would have added.
    const reader = new Response(initBody);
    contentType = reader.headers.get('content-type');
    body = new Uint8Array(await reader.arrayBuffer());
  } else if (initBody === null) {
    body = undefined;
  }
  if (contentType !== null && !headers.has('content-type')) headers.set('content-type', contentType);

  // Problems fetch would reject on every attempt are raised here, once, instead of being retried
  // as if they were network errors.
  if (!TOKEN.test(method)) throw new TypeError(`idempo client: invalid method ${JSON.stringify(method)}`);
  const base = typeof location === 'undefined' ? undefined : location.href;
  try {
    new URL(url, base);
  } catch (cause) {
    throw new TypeError(`idempo client: invalid URL ${JSON.stringify(url)}`, { cause });
  }
  const upper = method.toUpperCase();
  if (body !== undefined && (upper === 'GET' || upper === 'HEAD')) {
    throw new TypeError('idempo client: a GET or HEAD request cannot have a body');
  }
  return { url, method, headers, body, signal, rest };
}
