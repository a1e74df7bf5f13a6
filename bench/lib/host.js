/**
 * The server process of one benchmark run. Started by the harness with `fork()`, it opens the
 * variant named in argv, listens on a loopback port, and answers the harness over IPC:
 *
 *   harness ──mark──▶ host: snapshot process.cpuUsage() and the handler-run counter (and start
 *                           the CPU profiler when asked)
 *   harness ─report─▶ host: the deltas since mark
 *   harness ──stop──▶ host: close the server and the store, exit
 *
 * Nothing crosses the IPC channel during the measured window but these two messages.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { counters } from './app.js';

const spec = JSON.parse(process.argv[2]);
const { start } = await import(`../servers/${spec.module}.js`);
const server = await start(spec);

let marked;
let session;

process.on('message', async (message) => {
  switch (message.type) {
    case 'mark': {
      if (spec.profile) {
        session = new Session();
        session.connect();
        await session.post('Profiler.enable');
        await session.post('Profiler.setSamplingInterval', { interval: 100 });
        await session.post('Profiler.start');
      }
      marked = {
        cpu: process.cpuUsage(),
        runs: counters.handlerRuns,
        redis: counters.redisCommands,
        at: process.hrtime.bigint(),
      };
      process.send({ type: 'marked' });
      break;
    }
    case 'report': {
      const cpu = process.cpuUsage(marked.cpu);
      const runs = counters.handlerRuns - marked.runs;
      const redisCommands = counters.redisCommands - marked.redis;
      const elapsedUs = Number(process.hrtime.bigint() - marked.at) / 1_000;
      if (session) {
        const { profile } = await session.post('Profiler.stop');
        writeFileSync(spec.profile, JSON.stringify(profile));
        session.disconnect();
        session = undefined;
      }
      process.send({
        type: 'report',
        userUs: cpu.user,
        systemUs: cpu.system,
        handlerRuns: runs,
        redisCommands,
        elapsedUs,
      });
      break;
    }
    case 'stop': {
      const timer = setTimeout(() => process.exit(0), 3_000);
      timer.unref();
      try {
        await server.close();
      } finally {
        process.exit(0);
      }
      break;
    }
  }
});

process.send({ type: 'ready', port: server.port });
