import { type Logger, pino } from 'pino';

/** A real pino logger writing into memory, so tests can read what would have been logged. */
export function memoryLogger(level: pino.LevelWithSilent = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino({ level }, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}
