/**
 * Patching a prototype a framework swapped in for node's own. Express gives every `req` and `res`
 * its app's `app.request` / `app.response` as prototype, and V8 then builds a new hidden class
 * for every property added to such an object: far slower than on a plain request, and garbage
 * besides. So where idempo needs a method or an accessor on
 * such an object, it installs it once on the swapped prototype instead, and keeps its per-request
 * state in a WeakMap the installed functions read. Those functions pass every request idempo is
 * not watching on to the inherited behaviour.
 *
 * @module
 */

/** The prototype `object` was given in place of `nodePrototype`, or `undefined` if it has node's own. */
export function swappedPrototype(object: object, nodePrototype: object): object | undefined {
  const proto = Object.getPrototypeOf(object) as object | null;
  return proto === null || proto === nodePrototype ? undefined : proto;
}

/**
 * A set of properties installed at most once per swapped prototype. `describe` builds them for
 * one prototype (its functions usually call `Object.getPrototypeOf(proto)`'s methods for the
 * requests idempo does not watch); `clashes` says when a prototype must be left alone (it or
 * something else already defines one of the names), in which case the caller falls back to
 * patching the object itself.
 */
export class PrototypePatch {
  readonly #installed = new WeakSet<object>();
  readonly #describe: (proto: object) => Record<string, PropertyDescriptor>;
  readonly #clashes: (proto: object) => boolean;

  constructor(describe: (proto: object) => Record<string, PropertyDescriptor>, clashes: (proto: object) => boolean) {
    this.#describe = describe;
    this.#clashes = clashes;
  }

  /** Whether `proto` carries the properties, installing them on first use. */
  on(proto: object): boolean {
    if (this.#installed.has(proto)) return true;
    if (this.#clashes(proto) || !Object.isExtensible(proto)) return false;
    for (const [name, descriptor] of Object.entries(this.#describe(proto))) {
      Object.defineProperty(proto, name, { configurable: true, enumerable: false, ...descriptor });
    }
    this.#installed.add(proto);
    return true;
  }
}
