import type { Context, Next } from 'koa';

/**
 * What every answer of the bridge carries, whatever sent it (the API, vendor webhooks and lookups,
 * health, the metrics listener, every error, Node's parser refusals): the defensive headers
 * OWASP's REST Security cheat sheet asks of a JSON API. None changes what a client reads; each
 * keeps a browser from doing something with an answer it was never meant for.
 *
 * - `X-Content-Type-Options: nosniff`: a browser takes the declared type (a JSON error that
 *   quotes a caller's text is never sniffed into HTML or script).
 * - `Cache-Control: no-store`: answers name contacts (the API, a JivoChat answer's client card, a
 *   lookup), and no shared or browser cache should keep them; none of the bridge's answers is
 *   meant to be cached.
 * - `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`: an answer opened in a
 *   browser loads nothing and is framed by no page.
 * - `Referrer-Policy: no-referrer`: nothing a browser goes on to from an answer learns its address
 *   (a webhook URL carries its channel's token).
 *
 * The console sets its own (its pages' CSP, X-Frame-Options, its assets' `no-cache`), over these.
 */
export const DEFENSIVE_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

const NAMES = Object.keys(DEFENSIVE_HEADERS);
const VALUES = Object.values(DEFENSIVE_HEADERS);

/** Sets DEFENSIVE_HEADERS on an answer (before anything else sets its own). */
export function setDefensiveHeaders(ctx: Context): void {
  const { res } = ctx;
  for (let index = 0; index < NAMES.length; index++) res.setHeader(NAMES[index]!, VALUES[index]!);
}

/** DEFENSIVE_HEADERS as raw header lines, for answers written to the socket (client-error.ts). */
export const DEFENSIVE_HEADER_LINES = NAMES.map((name, index) => `${name}: ${VALUES[index]}\r\n`).join('');

/** A middleware of its own, for an app without the main app's first middleware (the metrics listener). */
export function defensiveHeaders() {
  return (ctx: Context, next: Next) => {
    setDefensiveHeaders(ctx);
    return next();
  };
}
