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
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { counters } from './app.js';

const spec = JSON.parse(process.argv[2]);
const { start } = await import(`../servers/${spec.module}.js`);
const server = await start(spec);

/**
 * CPU time of the main (JavaScript) thread alone, in µs, from /proc: `process.cpuUsage()` also
 * counts V8's GC helper threads and, when profiling, the profiler's own thread. 10 ms ticks.
 */
function mainThreadUs() {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command name.
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

let marked;
let session;
let windows = 0;

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
        main: mainThreadUs(),
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
      const mainUs = mainThreadUs() - marked.main;
      const elapsedUs = Number(process.hrtime.bigint() - marked.at) / 1_000;
      if (session) {
        const { profile } = await session.post('Profiler.stop');
        // The first window is the saturated one, the second the paced one.
        writeFileSync(
          windows++ === 0 ? spec.profile : spec.profile.replace(/\.cpuprofile$/, '.paced.cpuprofile'),
          JSON.stringify(profile),
        );
        session.disconnect();
        session = undefined;
      }
      process.send({
        type: 'report',
        userUs: cpu.user,
        systemUs: cpu.system,
        handlerRuns: runs,
        mainUs,
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
