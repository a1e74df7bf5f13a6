import { failureOf, tooLarge } from './error-responses.js';
import type { Idempotency, IdempotencyContext, IdempotencyRequest, IdempotencyResponse, ParsedBody } from './types.js';
import { unprotectedContext } from './unprotected.js';

/** `idem.handle()`: the protocol for web-standard `Request`/`Response`. */
export async function handleWebRequest(
  engine: Idempotency,
  request: Request,
  handler: (request: Request, context: IdempotencyContext) => Response | Promise<Response>,
): Promise<Response> {
  const neutral = fromWebRequest(request);
  const decision = await engine.begin(neutral);
  if (decision.action === 'respond') return toWebResponse(decision.response);
  if (decision.action === 'pass') {
    const passed = decision.body === undefined ? request : withBody(request, decision.body);
    return handler(passed, unprotectedContext());
  }
  let response: Response;
  try {
    response = await handler(withBody(request, decision.body), decision.context);
  } catch (error) {
    await decision.abort(error);
    return toWebResponse(engine.formatError(failureOf(error), neutral));
  }
  let body: Uint8Array;
  try {
    body = new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    await decision.abort(error);
    throw error;
  }
  const headers = headerPairs(response.headers);
  const instead = await decision.commit({ status: response.status, headers, body });
  if (instead) return toWebResponse(instead);
  return new Response(isNullBodyStatus(response.status) ? null : bodyInit(body), {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/** A neutral view of a web `Request`; the body is read only when the engine asks for it. */
export function fromWebRequest(request: Request): IdempotencyRequest {
  const url = new URL(request.url);
  return {
    method: request.method,
    url: url.pathname + url.search,
    // A web Request carries its authority in its URL, not in a Host header.
    header: (name) => request.headers.get(name) ?? (name === 'host' ? url.host : undefined),
    body: (maxBytes) => readLimited(request, maxBytes),
  };
}

/**
 * A neutral response as a web `Response`, with a fresh `Date` unless it has one: Node's HTTP
 * server adds it to the responses of the Node adapters, but a `Response` may be served by anything.
 */
export function toWebResponse(response: IdempotencyResponse): Response {
  const headers = new Headers();
  for (const [name, value] of response.headers) headers.append(name, value);
  if (!headers.has('date')) headers.set('date', httpDate());
  return new Response(isNullBodyStatus(response.status) ? null : bodyInit(response.body), {
    status: response.status,
    headers,
  });
}

let cachedDate = '';
let cachedDateSecond = 0;

/** The current time as an HTTP date (RFC 9110), made once a second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1_000);
  if (second !== cachedDateSecond) {
    cachedDateSecond = second;
    cachedDate = new Date(now).toUTCString();
  }
  return cachedDate;
}

// Bytes idempo holds are never shared-memory views; the DOM typings just cannot tell.
function bodyInit(bytes: Uint8Array): BodyInit {
  return bytes as Uint8Array<ArrayBuffer>;
}

/** A web `Headers` as name/value pairs, each `Set-Cookie` on its own. */
export function headerPairs(headers: Headers): [string, string][] {
  const pairs: [string, string][] = [];
  headers.forEach((value, name) => {
    if (name !== 'set-cookie') pairs.push([name, value]);
  });
  for (const cookie of headers.getSetCookie()) pairs.push(['set-cookie', cookie]);
  return pairs;
}

function isNullBodyStatus(status: number): boolean {
  return status === 101 || status === 204 || status === 205 || status === 304;
}

function withBody(request: Request, body: Uint8Array | ParsedBody | null): Request {
  if (body === null) return request;
  const bytes = body instanceof Uint8Array ? body : new TextEncoder().encode(JSON.stringify(body.parsed));
  return new Request(request, { body: bodyInit(bytes) });
}

async function readLimited(request: Request, maxBytes: number): Promise<Uint8Array | null> {
  if (request.body === null) return null;
  const declared = Number(request.headers.get('content-length'));
  if (declared > maxBytes) throw tooLarge(maxBytes);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return concatBytes(chunks, total);
}

/** The chunks as one array of `size` bytes (the one chunk itself when there is only one). */
export function concatBytes(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
