import { describe, expect, it } from 'vitest';
import { bodyArgument } from './redis-record.js';

describe('bodyArgument', () => {
  it('sends a small ASCII body as text, so that ioredis writes the command as one string', () => {
    expect(bodyArgument(Buffer.from('{"id":"pay_1"}\r\n'))).toBe('{"id":"pay_1"}\r\n');
    expect(bodyArgument(new Uint8Array())).toBe('');
  });

  it('reads only the bytes of a view into a larger buffer', () => {
    const backing = Buffer.from('##{"a":1}##');
    expect(bodyArgument(new Uint8Array(backing.buffer, backing.byteOffset + 2, 7))).toBe('{"a":1}');
  });

  it('keeps bytes for any body that is not all ASCII, valid UTF-8 or not', () => {
    for (const bytes of [Buffer.from('{"name":"Zoë"}'), Buffer.from([0xff, 0x00, 0x41])]) {
      const argument = bodyArgument(bytes);
      expect(Buffer.isBuffer(argument)).toBe(true);
      expect((argument as Buffer).equals(bytes)).toBe(true);
    }
  });

  it('keeps bytes for an ASCII body over 16 KiB, where copying it costs more than the calls saved', () => {
    expect(typeof bodyArgument(Buffer.alloc(16_384, 0x61))).toBe('string');
    expect(Buffer.isBuffer(bodyArgument(Buffer.alloc(16_385, 0x61)))).toBe(true);
  });
});
