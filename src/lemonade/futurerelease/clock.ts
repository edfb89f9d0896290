/**
 * Time for FUTURERELEASE (RFC 4865): what the hold parser reads "now" from and what the
 * release scheduler arms its timers with, so tests can drive both with a ManualClock.
 *
 * now() is the wall clock, since RFC 4865 release times are calendar instants
 * (HOLDUNTIL) or wall-clock offsets from submission (HOLDFOR). setTimeout() is a delay,
 * as Node's is. The two can disagree when the system clock is stepped: RFC 4865 §6
 * item 6 warns that both HOLDFOR and HOLDUNTIL are sensitive to changing clocks, and
 * §4.2 items 5 and 6 say a message MUST NOT be released before its time. A scheduler
 * should therefore treat a fired timer as "look again": compare now() with the release
 * time and re-arm when it is still early.
 */

import { performance } from 'node:perf_hooks';

export interface TimerHandle {
  /** Stops the timer; harmless after it has fired or been cancelled. */
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch (wall clock). */
  now(): number;
  /** Calls fn once, ms milliseconds from now (negative or NaN: as soon as possible). */
  setTimeout(fn: () => void, ms: number): TimerHandle;
}

export interface SystemClockOptions {
  /**
   * Unref the underlying Node timers so that a pending release never keeps the process
   * alive. Default false: the timers are ref'd like any Node timer, and the gateway's
   * shutdown path cancels them (or exits) on its own.
   */
  unref?: boolean;
}

/** Node clamps delays above 2^31-1 ms (about 24.8 days) to 1 ms; longer ones are chained. */
export const MAX_NODE_TIMER_MS = 2 ** 31 - 1;

function delayOf(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/**
 * A Clock on Date.now() and Node timers. Delays longer than a Node timer can hold
 * (an RFC 4865 hold can be up to 999,999,999 s, §3 item 2) are chained on the monotonic
 * clock, so a 30-day hold neither fires after 1 ms nor drifts with wall-clock steps.
 */
export function createSystemClock(options: SystemClockOptions = {}): Clock {
  const unref = options.unref === true;
  return {
    now: () => Date.now(),
    setTimeout(fn, ms) {
      const deadline = performance.now() + delayOf(ms);
      let timer: NodeJS.Timeout | undefined;
      let cancelled = false;
      const arm = (): void => {
        const remaining = deadline - performance.now();
        if (remaining <= 0) {
          timer = undefined;
          fn();
          return;
        }
        timer = setTimeout(arm, Math.min(Math.ceil(remaining), MAX_NODE_TIMER_MS));
        if (unref) timer.unref();
      };
      // The first arming always goes through a timer, so fn never runs synchronously.
      timer = setTimeout(arm, Math.min(delayOf(ms), MAX_NODE_TIMER_MS));
      if (unref) timer.unref();
      return {
        cancel() {
          if (cancelled) return;
          cancelled = true;
          if (timer !== undefined) clearTimeout(timer);
          timer = undefined;
        },
      };
    },
  };
}

/** The process clock; timers are ref'd (see SystemClockOptions.unref). */
export const systemClock: Clock = createSystemClock();

interface ManualTimer {
  due: number;
  seq: number;
  fn: () => void;
}

/**
 * A clock that moves only when told to, for tests. Timers fire inside advance()/set(),
 * in due-time order (ties in scheduling order), with now() equal to each timer's due time
 * while its callback runs. A timer scheduled by a callback fires in the same advance()
 * when it falls due within the window. An exception from a callback propagates out of
 * advance(); the clock then stands at that timer's due time and later timers stay pending.
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: ManualTimer[] = [];
  /** Guards against a callback that keeps scheduling zero-delay timers forever. */
  static readonly MAX_FIRINGS_PER_ADVANCE = 1_000_000;

  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) throw new RangeError('ManualClock start must be a finite number');
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: ManualTimer = { due: this.#now + delayOf(ms), seq: this.#seq++, fn };
    this.#timers.push(timer);
    return {
      cancel: () => {
        const i = this.#timers.indexOf(timer);
        if (i !== -1) this.#timers.splice(i, 1);
      },
    };
  }

  /** Timers scheduled and not yet fired or cancelled. */
  get pending(): number {
    return this.#timers.length;
  }

  /** Moves time forward by ms (>= 0), firing every timer that falls due on the way. */
  advance(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError('ManualClock.advance needs a finite ms >= 0');
    this.#runUntil(this.#now + ms);
  }

  /**
   * Sets the time to an absolute value. Forward behaves like advance(); backward just
   * moves the clock (a stepped-back system clock) and fires nothing: pending timers keep
   * their absolute due times.
   */
  set(ms: number): void {
    if (!Number.isFinite(ms)) throw new RangeError('ManualClock.set needs a finite ms');
    if (ms <= this.#now) {
      this.#now = ms;
      return;
    }
    this.#runUntil(ms);
  }

  #runUntil(target: number): void {
    let fired = 0;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const t of this.#timers) {
        if (t.due <= target && (next === undefined || t.due < next.due || (t.due === next.due && t.seq < next.seq))) {
          next = t;
        }
      }
      if (next === undefined) break;
      if (++fired > ManualClock.MAX_FIRINGS_PER_ADVANCE) {
        throw new Error('ManualClock: too many timers fired in one advance (a callback rescheduling itself with no delay?)');
      }
      this.#timers.splice(this.#timers.indexOf(next), 1);
      if (next.due > this.#now) this.#now = next.due;
      next.fn();
    }
    this.#now = target;
  }
}
