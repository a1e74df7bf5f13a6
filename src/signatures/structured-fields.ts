/**
 * The part of Structured Field Values (RFC 8941 / RFC 9651) that HTTP Message Signatures and
 * Content-Digest are written in: Dictionaries whose members are Items or Inner Lists, with
 * Parameters; Items that are Integers, Decimals, Strings, Tokens, Byte Sequences or Booleans.
 * Parsing is strict, as RFC 8941 §4.2 says: anything malformed fails the whole field.
 *
 * Written here rather than taken from a package because the client signs with it and must load
 * in a browser without any package, and signer and verifier must serialise `@signature-params`
 * alike: one small implementation, used by both, tested against the RFCs' examples.
 *
 * @module
 */

/** A bare item: what an Item or an Inner List member holds. */
export type BareItem = number | string | Token | Uint8Array | boolean;

/** A Token (`sha-256`, `*foo`): kept apart from a String, which serialises quoted. */
export class Token {
  constructor(readonly value: string) {}
}

/** Parameters, in order. */
export type Parameters = Map<string, BareItem>;

export interface Item {
  readonly value: BareItem;
  readonly params: Parameters;
}

export interface InnerList {
  readonly items: Item[];
  readonly params: Parameters;
}

export type Member = Item | InnerList;
export type Dictionary = Map<string, Member>;

/** Raised for a field that is not a well-formed Structured Field. */
export class StructuredFieldError extends Error {}

export function isInnerList(member: Member): member is InnerList {
  return 'items' in member;
}

/** Parses a Dictionary field value (RFC 8941 §4.2.2). Throws {@link StructuredFieldError}. */
export function parseDictionary(text: string): Dictionary {
  const parser = new Parser(text);
  const dictionary: Dictionary = new Map();
  parser.skipSpaces();
  if (parser.done()) return dictionary;
  for (;;) {
    const key = parser.key();
    let member: Member;
    if (parser.peek() === '=') {
      parser.pos++;
      member = parser.member();
    } else {
      member = { value: true, params: parser.parameters() };
    }
    // A later duplicate replaces an earlier one, in the earlier one's place (RFC 8941 §4.2.2).
    dictionary.set(key, member);
    parser.skipOws();
    if (parser.done()) return dictionary;
    parser.expect(',');
    parser.skipOws();
    if (parser.done()) throw new StructuredFieldError('a dictionary ends with a comma');
  }
}

const KEY_START = /[a-z*]/;
const KEY_CHAR = /[a-z0-9_\-.*]/;
const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

class Parser {
  pos = 0;
  constructor(readonly text: string) {}

  done(): boolean {
    return this.pos >= this.text.length;
  }
  peek(): string {
    return this.text[this.pos] ?? '';
  }
  expect(char: string): void {
    if (this.text[this.pos] !== char) throw new StructuredFieldError(`expected ${JSON.stringify(char)} at ${this.pos}`);
    this.pos++;
  }
  skipSpaces(): void {
    while (this.text[this.pos] === ' ') this.pos++;
  }
  skipOws(): void {
    while (this.text[this.pos] === ' ' || this.text[this.pos] === '\t') this.pos++;
  }

  key(): string {
    const start = this.pos;
    if (!KEY_START.test(this.peek())) throw new StructuredFieldError(`a key cannot start at ${start}`);
    while (!this.done() && KEY_CHAR.test(this.peek())) this.pos++;
    return this.text.slice(start, this.pos);
  }

  member(): Member {
    if (this.peek() === '(') return this.innerList();
    return this.item();
  }

  innerList(): InnerList {
    this.expect('(');
    const items: Item[] = [];
    for (;;) {
      this.skipSpaces();
      if (this.peek() === ')') {
        this.pos++;
        return { items, params: this.parameters() };
      }
      items.push(this.item());
      const next = this.peek();
      if (next !== ' ' && next !== ')') throw new StructuredFieldError(`malformed inner list at ${this.pos}`);
    }
  }

  item(): Item {
    const value = this.bareItem();
    return { value, params: this.parameters() };
  }

  parameters(): Parameters {
    const params: Parameters = new Map();
    while (this.peek() === ';') {
      this.pos++;
      this.skipSpaces();
      const key = this.key();
      let value: BareItem = true;
      if (this.peek() === '=') {
        this.pos++;
        value = this.bareItem();
      }
      params.set(key, value);
    }
    return params;
  }

  bareItem(): BareItem {
    const c = this.peek();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    if (c === '"') return this.string();
    if (c === ':') return this.bytes();
    if (c === '?') return this.boolean();
    if (c === '*' || /[A-Za-z]/.test(c)) return this.token();
    throw new StructuredFieldError(`no item can start at ${this.pos}`);
  }

  number(): number {
    const match = /^-?(\d{1,15})(\.\d{1,3})?/.exec(this.text.slice(this.pos));
    if (match === null) throw new StructuredFieldError(`malformed number at ${this.pos}`);
    const [whole, integer, fraction] = match;
    if (fraction !== undefined && (integer?.length ?? 0) > 12) throw new StructuredFieldError('decimal too long');
    const after = this.text[this.pos + whole.length];
    if (after !== undefined && after >= '0' && after <= '9') throw new StructuredFieldError('number too long');
    this.pos += whole.length;
    return Number(whole);
  }

  string(): string {
    this.expect('"');
    let out = '';
    for (;;) {
      const c = this.text[this.pos++];
      if (c === undefined) throw new StructuredFieldError('a string has no closing quote');
      if (c === '\\') {
        const next = this.text[this.pos++];
        if (next !== '"' && next !== '\\') throw new StructuredFieldError('a string has an invalid escape');
        out += next;
      } else if (c === '"') {
        return out;
      } else {
        const code = c.charCodeAt(0);
        if (code < 0x20 || code > 0x7e)
          throw new StructuredFieldError('a string holds a character outside printable ASCII');
        out += c;
      }
    }
  }

  token(): Token {
    const start = this.pos;
    this.pos++;
    while (!this.done() && TOKEN_CHAR.test(this.peek())) this.pos++;
    return new Token(this.text.slice(start, this.pos));
  }

  bytes(): Uint8Array {
    this.expect(':');
    const end = this.text.indexOf(':', this.pos);
    if (end === -1) throw new StructuredFieldError('a byte sequence has no closing colon');
    const encoded = this.text.slice(this.pos, end);
    if (!BASE64.test(encoded)) throw new StructuredFieldError('a byte sequence is not base64');
    this.pos = end + 1;
    return fromBase64(encoded);
  }

  boolean(): boolean {
    this.expect('?');
    const c = this.text[this.pos++];
    if (c === '1') return true;
    if (c === '0') return false;
    throw new StructuredFieldError('malformed boolean');
  }
}

/** Serialises a bare item (RFC 8941 §4.1.3). */
export function serializeBareItem(value: BareItem): string {
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new StructuredFieldError('only integers are serialised here');
    return String(value);
  }
  if (typeof value === 'boolean') return value ? '?1' : '?0';
  if (value instanceof Token) return value.value;
  if (value instanceof Uint8Array) return `:${toBase64(value)}:`;
  return serializeString(value);
}

/** A String: quoted, with `"` and `\` escaped; printable ASCII only. */
export function serializeString(text: string): string {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code > 0x7e) throw new StructuredFieldError('a string must be printable ASCII');
  }
  return `"${text.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

export function serializeParameters(params: Parameters): string {
  let out = '';
  for (const [key, value] of params) out += value === true ? `;${key}` : `;${key}=${serializeBareItem(value)}`;
  return out;
}

export function serializeItem(item: Item): string {
  return serializeBareItem(item.value) + serializeParameters(item.params);
}

export function serializeInnerList(list: InnerList): string {
  return `(${list.items.map(serializeItem).join(' ')})${serializeParameters(list.params)}`;
}

export function serializeDictionary(dictionary: Dictionary): string {
  return [...dictionary]
    .map(([key, member]) => {
      if (isInnerList(member)) return `${key}=${serializeInnerList(member)}`;
      if (member.value === true) return key + serializeParameters(member.params);
      return `${key}=${serializeItem(member)}`;
    })
    .join(', ');
}

/** Standard base64, as Byte Sequences carry it; `btoa` works the same in browsers and Node. */
export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i] as number);
  return btoa(binary);
}

export function fromBase64(text: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw new StructuredFieldError('not base64');
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
