/**
 * An engine that does nothing but what an adapter needs of it, for the "adapter alone"
 * diagnostic cases: every request has its body read and is told to execute as a fresh key would
 * be, so the adapter watches the body and captures the response; no key is claimed or stored.
 */
export function idleEngine() {
  const execution = {
    action: 'execute',
    context: undefined,
    body: null,
    commitNow: () => undefined,
    commit: async () => undefined,
    abort: async () => {},
    clientGone: () => {},
    track: () => {},
  };
  return {
    async begin(request) {
      await request.body(1 << 20);
      return execution;
    },
    handle: () => Promise.reject(new Error('not used')),
    formatError: () => ({ status: 500, headers: [], body: null }),
    limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20 },
  };
}
