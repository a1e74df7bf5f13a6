// Judges one scenario from the ledger and what every client got. No figure is taken from idempo
// itself: executions come from the ledger, answers from the clients, and the key's kept result
// from a final retry long after the lease.
//
// Duplicates (executions of a key beyond its first) are classified by what happened to the
// execution just before them:
// - "instance killed mid-upstream (marked)": the instance that sent the previous execution was
//   SIGKILLed before that execution had answered, and the duplicate carries `Idempo-Redrive`. No
//   proxy can know whether an upstream it never heard back from did the work: only the upstream
//   can deduplicate, and the marker tells it to.
// - "instance killed after upstream answered, before storing (marked)": same, but the kill came
//   after the upstream's answer and before the instance had stored it (the key was re-driven, so
//   it had not): within STORE_GRACE_MS of the answer, or while the store was down.
// - "lost at promotion …" (PostgreSQL failover): a primary crashed between the previous execution
//   and this one, and that primary had a claim, step or completion of the key that the standby
//   promoted in its place did not (read from both after the run, see postgres-failover.js). It is
//   what an asynchronous standby allows, so a control run (the option off) counts it as explained;
//   in any other run it is unexplained: the option is there to prevent it.
// Anything else is unexplained, with what the previous execution went through as a hint.
export const ALLOWED_CAUSES = [
  'instance killed mid-upstream (marked)',
  'instance killed after upstream answered, before storing (marked)',
];

/** The causes a PostgreSQL control run explains by a lost write (see above); prefix of each. */
export const PROMOTION_LOSS = 'lost at promotion';

/** How long after the upstream's answer a kill still counts as "before storing" (store up). */
const STORE_GRACE_MS = 1_000;

const is2xx = (status) => status !== null && status >= 200 && status < 300;

/**
 * @param {{ config: object, ops: object[], executions: object[], kills: {instance: string, t: number}[],
 *   outages: {start: number, end: number|null}[], startedAt: number, upstreamTimeoutMs: number }} input
 */
export function analyse({
  config,
  ops,
  executions,
  kills,
  outages,
  startedAt,
  upstreamTimeoutMs,
  keyEvents = [],
  promotionLosses = new Map(),
}) {
  const eventsByKey = new Map();
  for (const event of keyEvents) {
    const list = eventsByKey.get(event.key) ?? [];
    list.push(event);
    eventsByKey.set(event.key, list);
  }
  const byKey = new Map();
  for (const execution of executions) {
    const list = byKey.get(execution.key) ?? [];
    list.push(execution);
    byKey.set(execution.key, list);
  }
  const byId = new Map(executions.map((execution) => [execution.id, execution]));
  const rel = (t) => (t === null || t === undefined ? null : t - startedAt);

  const causes = {};
  const examples = {};
  let duplicates = 0;
  let markedDuplicates = 0;
  let wrongSuccesses = 0;
  let unexecutedSuccesses = 0;
  let unverifiedSuccesses = 0;
  let stuck = 0;
  let finalFailed = 0;
  let neverExecuted = 0;
  let clientSucceeded = 0;
  let clientGaveUp = 0;
  let attempts = 0;
  let abandoned = 0;
  const stuckKeys = [];
  const wrong = [];
  const started = ops.filter((op) => op.outcome !== 'not started');

  for (const op of started) {
    attempts += op.attempts.length;
    abandoned += op.attempts.filter((a) => a.abandoned).length;
    if (op.outcome === 'success') clientSucceeded++;
    else clientGaveUp++;
    const execs = byKey.get(op.key) ?? [];
    if (execs.length === 0) neverExecuted++;
    for (let k = 1; k < execs.length; k++) {
      duplicates++;
      const cause = classify(execs[k], execs[k - 1], op, execs[k - 2]);
      if (execs[k].redrive !== null) markedDuplicates++;
      causes[cause] = (causes[cause] ?? 0) + 1;
      examples[cause] ??= [];
      if (examples[cause].length < 3) examples[cause].push(evidence(op, execs));
    }

    // The result a key keeps is what its final retry replays.
    const kept = op.final && is2xx(op.final.status) ? op.final.execution : null;
    if (op.final?.status === 409) {
      stuck++;
      stuckKeys.push(evidence(op, execs));
    } else if (op.final && !is2xx(op.final.status) && op.final.status !== 409) finalFailed++;
    const successes = [...op.attempts.filter((a) => is2xx(a.status))];
    if (op.final && is2xx(op.final.status)) successes.push(op.final);
    for (const success of successes) {
      const execution = success.execution ? byId.get(success.execution) : undefined;
      if (!execution || execution.key !== op.key) {
        unexecutedSuccesses++;
        if (wrong.length < 5) wrong.push({ kind: 'unexecuted', got: success.execution, ...evidence(op, execs) });
      } else if (kept === null) {
        unverifiedSuccesses++;
      } else if (success.execution !== kept) {
        wrongSuccesses++;
        if (wrong.length < 5) wrong.push({ kind: 'wrong', got: success.execution, kept, ...evidence(op, execs) });
      }
    }
  }

  function classify(execution, previous, op, beforePrevious) {
    const marked = execution.redrive !== null;
    // A write of the key lost at a promotion that came after the execution before the previous one
    // (so it was the previous execution's claim, step or completion, or a later one) and before
    // this one started.
    const lost = (promotionLosses.get(op.key) ?? []).find(
      (write) => write.t <= execution.start && (beforePrevious === undefined || write.t > beforePrevious.start),
    );
    // An instance tag names one process (index:generation), so a kill of it is a kill of the process
    // that sent `previous`, even when the request reached the ledger a few ms after the signal.
    const kill = kills.find((k) => k.instance === previous.instance && k.t <= execution.start);
    if (kill) {
      if (!marked) return 'unexplained: re-run after an instance kill, not marked';
      if (previous.answered === null || kill.t < previous.answered) return ALLOWED_CAUSES[0];
      // Storing an answer takes a store round trip, or longer while the store is down and the
      // completion is retried; a kill long after the answer with the store up is not that.
      const storing =
        kill.t - previous.answered <= STORE_GRACE_MS ||
        outages.some((o) => o.start <= kill.t && (o.end ?? Number.POSITIVE_INFINITY) >= previous.answered);
      if (storing) return ALLOWED_CAUSES[1];
      return 'unexplained: marked re-drive, instance killed long after its upstream answered';
    }
    if (lost)
      return `${PROMOTION_LOSS}: the crashed primary had the key's ${lost.what}, the promoted standby did not (${
        marked ? 'marked' : 'not marked'
      })`;
    if (marked) {
      const end = previous.answered ?? previous.hungUp ?? execution.start;
      if (outages.some((o) => o.start <= end && (o.end ?? Number.POSITIVE_INFINITY) >= previous.start))
        return 'unexplained: marked re-drive, owner alive; its lease ran out around a store outage';
      return 'unexplained: marked re-drive, owner alive (lease lost while working?)';
    }
    if (config.mode === 'gateway' && previous.workMs > upstreamTimeoutMs)
      return 'unexplained: after an upstream timeout (the previous execution was slow)';
    const end = (previous.answered ?? previous.hungUp ?? previous.start) + 2_000;
    if (outages.some((o) => o.start <= end && (o.end ?? Number.POSITIVE_INFINITY) >= previous.start))
      return 'unexplained: around a store outage';
    const attempt = op.attempts[Number(previous.attempt) - 1];
    if (attempt?.abandoned) return 'unexplained: after the client abandoned the attempt';
    if (previous.hungUp !== null) return 'unexplained: the previous execution was hung up on';
    return 'unexplained: other';
  }

  function evidence(op, execs) {
    return {
      key: op.key,
      executions: execs.map((e) => ({
        id: e.id,
        instance: e.instance,
        attempt: e.attempt,
        redrive: e.redrive,
        workMs: e.workMs,
        start: rel(e.start),
        answered: rel(e.answered),
        hungUp: rel(e.hungUp),
      })),
      attempts: op.attempts.map((a) => ({
        n: a.n,
        t: rel(a.t),
        ...(a.done ? { done: rel(a.done) } : {}),
        ...(a.abandoned ? { abandoned: true } : {}),
        ...(a.status !== null ? { status: a.status } : { error: a.error }),
        ...(a.code ? { code: a.code } : {}),
        ...(a.execution ? { execution: a.execution } : {}),
      })),
      final: op.final && {
        t: rel(op.final.t),
        status: op.final.status,
        execution: op.final.execution,
        ...(op.final.code ? { code: op.final.code } : {}),
        ...(op.final.error ? { error: op.final.error } : {}),
      },
      events: (eventsByKey.get(op.key) ?? []).map((e) => ({ ...e, key: undefined, t: rel(e.t) })),
      ...(promotionLosses.has(op.key)
        ? { lostAtPromotion: promotionLosses.get(op.key).map((w) => ({ fault: w.fault, t: rel(w.t), what: w.what })) }
        : {}),
      kills: kills
        .filter((k) => execs.some((e) => Math.abs(k.t - e.start) < 5_000))
        .map((k) => ({ instance: k.instance, t: rel(k.t) })),
      outages: outages
        .filter((o) => execs.some((e) => Math.abs(o.start - e.start) < 5_000))
        .map((o) => ({ start: rel(o.start), end: rel(o.end) })),
    };
  }

  // A control run explains its lost writes' duplicates (it shows what the option prevents).
  const explained = (cause) =>
    ALLOWED_CAUSES.includes(cause) || (config.control === true && cause.startsWith(PROMOTION_LOSS));
  const unexplained = Object.entries(causes)
    .filter(([cause]) => !explained(cause))
    .reduce((sum, [, n]) => sum + n, 0);
  return {
    operations: started.length,
    notStarted: ops.length - started.length,
    attempts,
    abandonedAttempts: abandoned,
    executions: started.reduce((sum, op) => sum + (byKey.get(op.key)?.length ?? 0), 0),
    slowExecutions: executions.filter((e) => e.slow).length,
    duplicates,
    markedDuplicates,
    unexplainedDuplicates: unexplained,
    causes,
    wrongSuccesses,
    unexecutedSuccesses,
    unverifiedSuccesses,
    stuckKeys: stuck,
    finalFailed,
    neverExecuted,
    clientSucceeded,
    clientGaveUp,
    evidence: { duplicates: examples, stuck: stuckKeys.slice(0, 3), wrong },
  };
}
