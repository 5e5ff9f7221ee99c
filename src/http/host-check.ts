import { isIP } from 'node:net';
import type { Middleware } from 'koa';
import { AppError } from '../errors.js';

/**
 * DNS rebinding. A listener that trusts being on loopback (the open metrics listener; the main
 * port while the config holds the example's published credentials, which may not listen
 * elsewhere) is reachable by a web page the machine's browser opens: at
 * `http://attacker.example:9464/` it points its name at 127.0.0.1 once loaded (a short DNS TTL),
 * and the browser then sends the page's requests to the listener as the page's own origin and
 * lets it read the answers: the metrics (channel and destination ids, traffic, which the lookup
 * URL otherwise goes out of its way not to tell), or with a published admin token the whole
 * admin API. What the browser cannot change is the `Host` header: it names the attacker's
 * domain. So such a listener serves only a `Host` no DNS answer controls: an IP address,
 * `localhost` or a `*.localhost` name (RFC 6761: resolved to loopback by the browser itself), or
 * a name the config lists (`metrics.allowedHosts`); any other is 403 `host_not_allowed`. A
 * request with no `Host` (HTTP/1.0) comes from no browser and is served.
 *
 * A metrics listener on another address answers every `Host`: Prometheus scrapes by whatever
 * name its network gives the bridge (a Compose or Kubernetes service), which the bridge cannot
 * know (README "Security").
 */
export class HostNotAllowedError extends AppError {
  constructor(host: string, fix: string) {
    super(
      'host_not_allowed',
      403,
      `this listener does not answer for the host ${JSON.stringify(host.slice(0, 100))}: ${fix}`,
    );
  }
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

/** A Host no DNS answer controls, or one listed (`allowedHosts`); else HostNotAllowedError saying `fix`. */
export function rebindingGuard(allowedHosts: readonly string[], fix: string): Middleware {
  const allowed = new Set(allowedHosts.map((name) => hostName(name)));
  return (ctx, next) => {
    const header = ctx.req.headers.host;
    if (header !== undefined) {
      const name = hostName(header);
      const fixed = isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost');
      if (!fixed && !allowed.has(name)) throw new HostNotAllowedError(header, fix);
    }
    return next();
  };
}
