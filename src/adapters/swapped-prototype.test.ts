import { describe, expect, it } from 'vitest';
import { PrototypePatch, swappedPrototype } from './swapped-prototype.js';

class Base {
  greet() {
    return 'base';
  }
}

describe('swappedPrototype', () => {
  it('names the prototype put in place of the native one, and nothing for a native object', () => {
    const swapped = Object.create(Base.prototype) as object;
    expect(swappedPrototype(Object.create(swapped) as object, Base.prototype)).toBe(swapped);
    expect(swappedPrototype(new Base(), Base.prototype)).toBeUndefined();
    expect(swappedPrototype(Object.create(null) as object, Base.prototype)).toBeUndefined();
  });
});

describe('PrototypePatch', () => {
  it('installs its properties once per prototype, hidden from enumeration', () => {
    let built = 0;
    const patch = new PrototypePatch(
      (proto) => {
        built++;
        const parent = Object.getPrototypeOf(proto) as Base;
        return { greet: { writable: true, value: () => `patched ${parent.greet()}` } };
      },
      (proto) => Object.hasOwn(proto, 'greet'),
    );
    const proto = Object.create(Base.prototype) as Base;
    expect(patch.on(proto)).toBe(true);
    expect(patch.on(proto)).toBe(true);
    expect(built).toBe(1);
    expect((Object.create(proto) as Base).greet()).toBe('patched base');
    expect(Object.keys(proto)).toEqual([]);
  });

  it('leaves alone a prototype that clashes or cannot be extended', () => {
    const patch = new PrototypePatch(
      () => ({ greet: { writable: true, value: () => 'patched' } }),
      (proto) => Object.hasOwn(proto, 'greet'),
    );
    const own = Object.create(Base.prototype, { greet: { value: () => 'own' } }) as Base;
    expect(patch.on(own)).toBe(false);
    expect(own.greet()).toBe('own');
    const frozen = Object.freeze(Object.create(Base.prototype)) as Base;
    expect(patch.on(frozen)).toBe(false);
    expect(frozen.greet()).toBe('base');
  });
});
