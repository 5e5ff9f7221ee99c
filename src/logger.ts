import { type Logger, type LoggerOptions, pino } from 'pino';

/**
 * pino with secrets redacted wherever they might be logged: authorization headers, tokens,
 * keys and secrets in objects (config fragments, errors). Webhook URL tokens are redacted by
 * the HTTP layer before paths are logged (src/http/guard.ts redactPath).
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  '*.token',
  '*.webhookUrl',
  'webhookUrl',
  '*.apiToken',
  '*.secret',
  '*.previousSecret',
  '*.masterKey',
  '*.key',
  'token',
  'apiToken',
  'secret',
  'previousSecret',
  'masterKey',
];

/**
 * Vendor-controlled strings (event names, reasons, ids) reach log fields; a hostile payload must
 * not turn one log line into megabytes. Every string field is cut to MAX_LOG_STRING characters
 * (stacks to MAX_LOG_STACK), in one linear pass over the logged object (issue 10 item 9).
 */
export const MAX_LOG_STRING = 500;
const MAX_LOG_STACK = 4000;
const MAX_LOG_DEPTH = 6;

function clip(value: string, limit: number): string {
  return value.length > limit ? `${value.slice(0, limit)}…(+${value.length - limit} chars)` : value;
}

export function clipLogFields(value: unknown, depth = 0, key = ''): unknown {
  if (typeof value === 'string') return clip(value, key === 'stack' ? MAX_LOG_STACK : MAX_LOG_STRING);
  if (value === null || typeof value !== 'object' || depth >= MAX_LOG_DEPTH) return value;
  if (Array.isArray(value)) {
    const items = value.slice(0, 50).map((item) => clipLogFields(item, depth + 1));
    return value.length > 50 ? [...items, `…(+${value.length - 50} items)`] : items;
  }
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Error) {
    // pino's err serializer has not run yet here: serialise the same way, cut.
    const code = (value as NodeJS.ErrnoException).code;
    // The cause's type, message and code only (never its other fields: ioredis puts the command
    // and its arguments, contact data, on a reply error). Without it every store failure logged
    // as the same "the store is unavailable" whatever Redis said: an OOM, a timeout, READONLY.
    const cause = value.cause instanceof Error && depth < MAX_LOG_DEPTH ? value.cause : undefined;
    return {
      type: value.name,
      message: messageWithCauses(value),
      stack: clip(stackWithCauses(value), MAX_LOG_STACK),
      ...(code ? { code } : {}),
      ...(cause ? { cause: causeFields(cause, depth + 1) } : {}),
    };
  }
  const out: Record<string, unknown> = {};
  for (const [name, item] of Object.entries(value)) out[name] = clipLogFields(item, depth + 1, name);
  return out;
}

/**
 * The error's stack, then each cause's as "caused by: <its stack>" (the form pino's own err
 * serializer writes). Built here because pino's serializer cannot: it runs after this formatter,
 * on the plain object made above, and found a cause there with no stack of its own, so every
 * wrapped error (a StoreUnavailableError around Redis's) ended its stack in an empty "caused by: ".
 */
function stackWithCauses(error: Error): string {
  return causeChain(error)
    .map((item) => item.stack ?? `${item.name}: ${item.message}`)
    .join('\ncaused by: ');
}

/** The message, then each cause's after ": ", as pino's err serializer wrote it; each part cut. */
function messageWithCauses(error: Error): string {
  return causeChain(error)
    .map((item) => clip(item.message, MAX_LOG_STRING))
    .join(': ');
}

/** The error and its causes, at most MAX_LOG_DEPTH of them, stopping at a circle. */
function causeChain(error: Error): Error[] {
  const chain = [error];
  for (
    let cause = error.cause;
    cause instanceof Error && chain.length <= MAX_LOG_DEPTH;
    cause = cause.cause
  ) {
    if (chain.includes(cause)) break;
    chain.push(cause);
  }
  return chain;
}

/** A cause as the log shows it: type, message (cut), code, and its own cause. */
function causeFields(error: Error, depth: number): Record<string, unknown> {
  const code = (error as NodeJS.ErrnoException).code;
  const cause = error.cause instanceof Error && depth < MAX_LOG_DEPTH ? error.cause : undefined;
  return {
    type: error.name,
    message: clip(error.message, MAX_LOG_STRING),
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    ...(cause ? { cause: causeFields(cause, depth + 1) } : {}),
  };
}

export function createLogger(
  level: LoggerOptions['level'] = 'info',
  destination?: pino.DestinationStream,
): Logger {
  const options: LoggerOptions = {
    level,
    base: { service: 'chatbridge' },
    redact: { paths: REDACT_PATHS, censor: '***' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { log: (object) => clipLogFields(object) as Record<string, unknown> },
    // The formatter above has already serialised every error (clipLogFields). pino's default err
    // serializer ran again after it, on that plain object: it named every error "Object", dropped
    // the `cause` field and appended an empty "caused by: " to the stack.
    serializers: { err: (value: unknown) => value },
    hooks: {
      // The message itself may quote a vendor string too.
      logMethod(args, method) {
        const [first, ...rest] = args as unknown[];
        if (typeof first === 'string')
          return method.apply(this, [clip(first, MAX_LOG_STRING), ...rest] as never);
        if (typeof rest[0] === 'string') rest[0] = clip(rest[0], MAX_LOG_STRING);
        return method.apply(this, [first, ...rest] as never);
      },
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * Says a failure that repeats once a minute per key rather than each time it happens. While
 * Redis is down every webhook (503), every probe, every background retry (once a second) and
 * every BullMQ reconnect failed the same way, each with a warn line: thousands a minute, which
 * buried the one line that said what was wrong and flooded log shipping. `sayNow(key)` answers
 * how many repeats were kept quiet since the key was last said (0 the first time), or undefined
 * while it is to stay quiet (log at debug then). Keys are fixed words and error codes, never
 * caller-chosen text; past 1,000 the oldest are forgotten, so the map stays bounded anyway.
 */
export function createRepeatGate(everyMs = 60_000, now: () => number = Date.now) {
  const said = new Map<string, { at: number; quiet: number }>();
  return {
    sayNow(key: string): number | undefined {
      const at = now();
      const entry = said.get(key);
      if (entry && at - entry.at < everyMs) {
        entry.quiet++;
        return undefined;
      }
      said.delete(key);
      if (said.size >= 1000) said.delete(said.keys().next().value as string);
      said.set(key, { at, quiet: 0 });
      return entry?.quiet ?? 0;
    },
  };
}

export type RepeatGate = ReturnType<typeof createRepeatGate>;

/**
 * Logs `err` at warn when the gate says so (with `repeats`: how many like it went unsaid since),
 * else at debug. For failures that recur on their own until something outside is fixed.
 */
export function warnOncePerMinute(
  logger: Logger,
  gate: RepeatGate,
  key: string,
  fields: Record<string, unknown>,
  message: string,
): void {
  const repeats = gate.sayNow(key);
  if (repeats === undefined) logger.debug(fields, message);
  else logger.warn(repeats > 0 ? { ...fields, repeats } : fields, message);
}
