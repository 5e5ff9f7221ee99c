import { isIP } from 'node:net';
import type { Middleware } from 'koa';
import { AppError } from '../errors.js';

/**
 * DNS rebinding against the metrics listener. It is open (no token) and bound to loopback by
 * default, on the trust that only this machine reaches it. A web page the machine's browser opens
 * at `http://attacker.example:9464/` can point its name at 127.0.0.1 once loaded (a short DNS
 * TTL); the browser then sends the page's own requests to the listener, as the same origin, and
 * lets the page read the answers: the bridge's channel and destination ids, vendors and traffic,
 * which the lookup URL otherwise goes out of its way not to tell (README "Security"). What the
 * browser cannot change is the `Host` header: it names the attacker's domain. So a loopback
 * listener serves only a `Host` that no DNS answer controls: an IP address, `localhost` or a
 * `*.localhost` name (RFC 6761: resolved to loopback by the browser itself), or a name listed in
 * `metrics.allowedHosts`; any other is 403 `host_not_allowed`. A request with no `Host` (HTTP/1.0)
 * comes from no browser and is served.
 *
 * A listener on another address answers every `Host`: Prometheus scrapes by whatever name its
 * network gives the bridge (a Compose service, a Kubernetes service), which the bridge cannot
 * know; such a listener is meant to be reached across a network the operator controls
 * (README "Security").
 */
export class HostNotAllowedError extends AppError {
  constructor(host: string) {
    super(
      'host_not_allowed',
      403,
      `the metrics listener does not answer for the host ${JSON.stringify(host.slice(0, 100))}: ask it by IP address or localhost, or list the name in metrics.allowedHosts`,
    );
  }
}

/** Whether `bind` (metrics.host) is a loopback address or `localhost`: the listener is this machine's alone. */
export function isLoopbackBind(bind: string): boolean {
  const host = bind.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(host);
}

/** The name part of a Host header: without its port, an IPv6 literal without its brackets, lower case. */
export function hostName(header: string): string {
  const host = header.trim().toLowerCase();
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(1, end);
  }
  const colon = host.indexOf(':');
  const name = colon === -1 ? host : host.slice(0, colon);
  // A fully qualified name's trailing dot (localhost.) is the same name.
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

/** A Host no DNS answer controls, or one listed: see HostNotAllowedError. */
export function rebindingGuard(allowedHosts: readonly string[]): Middleware {
  const allowed = new Set(allowedHosts.map((name) => hostName(name)));
  return (ctx, next) => {
    const header = ctx.req.headers.host;
    if (header !== undefined) {
      const name = hostName(header);
      const fixed = isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost');
      if (!fixed && !allowed.has(name)) throw new HostNotAllowedError(header);
    }
    return next();
  };
}
