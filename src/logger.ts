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
  '*.apiToken',
  '*.secret',
  '*.masterKey',
  '*.key',
  'token',
  'apiToken',
  'secret',
  'masterKey',
];

export function createLogger(
  level: LoggerOptions['level'] = 'info',
  destination?: pino.DestinationStream,
): Logger {
  const options: LoggerOptions = {
    level,
    base: { service: 'chatbridge' },
    redact: { paths: REDACT_PATHS, censor: '***' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}
