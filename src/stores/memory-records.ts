/**
 * The memory store's record, packed into one buffer of bytes.
 *
 * Why bytes and not an object: a store at its default bound holds 100,000 records, and every
 * record a request leaves behind survives the young generation's collections, which copy it, and
 * then sits in the old generation, which marks it. As objects, a record was about a dozen of them
 * (the record, four boxed times, the fingerprint, the response, its header pairs, the body's
 * view): in a loop that kept 100,000 records, claim and complete took 9.5–9.9 µs together, and
 * 5.5–6.0 µs with every record one buffer view over bytes outside the heap, which the collector
 * neither copies nor scans (bench/notes/2026-12-05-memory-records.md).
 *
 * Layout, little-endian:
 *
 * ```
 *  0  state        u8   0 in flight, 1 completed, 2 released
 *  1  (unused)     3 bytes
 *  4  response at  u32  where the response starts: the end of the fingerprint
 *  8  token        f64
 * 16  created at   f64  when this lifetime of the record began
 * 24  lease until  f64
 * 32  expires at   f64
 * 40  fingerprint  text
 *     response     status u16, header count u32, then name and value texts, then the body
 * ```
 *
 * A text is a u32 length, then the bytes: ASCII as one byte a character, anything else as UTF-16
 * (two bytes a code unit, the length's top bit set), so every JavaScript string comes back exactly
 * as it was given, unpaired surrogates included.
 *
 * @module
 */
import type { StoredResponse } from '../vocabulary/index.js';

/** What the first byte holds. */
export type RecordState = 'in_flight' | 'completed' | 'released';

const STATES: readonly RecordState[] = ['in_flight', 'completed', 'released'];

const STATE = 0;
const RESPONSE_AT = 4;
const TOKEN = 8;
const CREATED_AT = 16;
const LEASE_UNTIL = 24;
const EXPIRES_AT = 32;
const FINGERPRINT = 40;

const WIDE = 0x8000_0000;

/** Hands out bytes the store owns (see memory-chunks.ts). */
export type Allocate = (size: number) => Buffer;

function textSize(text: string): number {
  const ascii = Buffer.byteLength(text, 'utf8') === text.length;
  return 4 + (ascii ? text.length : text.length * 2);
}

function writeText(bytes: Buffer, at: number, text: string): number {
  if (Buffer.byteLength(text, 'utf8') === text.length) {
    bytes.writeUInt32LE(text.length, at);
    return at + 4 + bytes.write(text, at + 4, 'latin1');
  }
  bytes.writeUInt32LE(((text.length * 2) | WIDE) >>> 0, at);
  return at + 4 + bytes.write(text, at + 4, 'utf16le');
}

/** The text at `at`, and where the next field starts. */
function readText(bytes: Buffer, at: number): [text: string, next: number] {
  const head = bytes.readUInt32LE(at);
  const size = head & ~WIDE;
  const start = at + 4;
  return [bytes.toString(head & WIDE ? 'utf16le' : 'latin1', start, start + size), start + size];
}

/** A new in-flight record. */
export function inFlightRecord(
  allocate: Allocate,
  fingerprint: string,
  token: number,
  now: number,
  leaseUntil: number,
  expiresAt: number,
): Buffer {
  const record = allocate(FINGERPRINT + textSize(fingerprint));
  record[STATE] = 0;
  record.writeUInt32LE(writeText(record, FINGERPRINT, fingerprint), RESPONSE_AT);
  record.writeDoubleLE(token, TOKEN);
  record.writeDoubleLE(now, CREATED_AT);
  record.writeDoubleLE(leaseUntil, LEASE_UNTIL);
  record.writeDoubleLE(expiresAt, EXPIRES_AT);
  return record;
}

/**
 * The record completed with `response`: a new buffer with the same times, token and fingerprint,
 * and the response's bytes copied in, so the caller's buffer is not held (see memory-chunks.ts).
 */
export function completedRecord(allocate: Allocate, record: Buffer, response: StoredResponse): Buffer {
  const head = record.readUInt32LE(RESPONSE_AT);
  let size = head + 6 + response.body.byteLength;
  for (const [name, value] of response.headers) size += textSize(name) + textSize(value);
  const next = allocate(size);
  record.copy(next, 0, 0, head);
  next[STATE] = 1;
  next.writeUInt16LE(response.status, head);
  next.writeUInt32LE(response.headers.length, head + 2);
  let at = head + 6;
  for (const [name, value] of response.headers) at = writeText(next, writeText(next, at, name), value);
  next.set(response.body, at);
  return next;
}

/** The response of a completed record: its body a view of the record's bytes, not a copy. */
export function responseOf(record: Buffer): StoredResponse {
  const head = record.readUInt32LE(RESPONSE_AT);
  const count = record.readUInt32LE(head + 2);
  const headers: [string, string][] = new Array(count);
  let at = head + 6;
  for (let i = 0; i < count; i++) {
    const [name, afterName] = readText(record, at);
    const [value, afterValue] = readText(record, afterName);
    headers[i] = [name, value];
    at = afterValue;
  }
  return { status: record.readUInt16LE(head), headers, body: record.subarray(at) };
}

export function fingerprintOf(record: Buffer): string {
  return readText(record, FINGERPRINT)[0];
}

export function stateOf(record: Buffer): RecordState {
  return STATES[record[STATE] as number] as RecordState;
}

export function setState(record: Buffer, state: RecordState): void {
  record[STATE] = STATES.indexOf(state);
}

export const tokenOf = (record: Buffer): number => record.readDoubleLE(TOKEN);
export const createdAtOf = (record: Buffer): number => record.readDoubleLE(CREATED_AT);
export const leaseUntilOf = (record: Buffer): number => record.readDoubleLE(LEASE_UNTIL);
export const expiresAtOf = (record: Buffer): number => record.readDoubleLE(EXPIRES_AT);

export function setToken(record: Buffer, token: number): void {
  record.writeDoubleLE(token, TOKEN);
}

export function setLeaseUntil(record: Buffer, at: number): void {
  record.writeDoubleLE(at, LEASE_UNTIL);
}

export function setExpiresAt(record: Buffer, at: number): void {
  record.writeDoubleLE(at, EXPIRES_AT);
}
