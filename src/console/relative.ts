/**
 * The console's own addresses, written relative to the page they are on.
 *
 * Pages, forms and redirects name console paths as the bridge sees them (`/console/deliveries`).
 * Behind a proxy that serves the bridge under a path (https://example.org/chat/ → the bridge's
 * `/`), the browser resolves an absolute path against the proxy's root and loses the `/chat`:
 * the first redirect or link left the bridge. Written relative to the page (`../deliveries`
 * becomes `../../console/deliveries` from `/console/contacts/c_1`), the browser resolves each one
 * against the address it actually used, whatever the proxy's path. Only the path above the page
 * matters, so going up to the bridge's root and down the whole target is always right.
 */

/**
 * `target`, a path from the bridge's root (`/console/…`, with its query or fragment), as a URL
 * relative to the page at `from` (the request's path as the bridge saw it, not decoded).
 */
export function relativeTo(from: string, target: string): string {
  // `/console/contacts/c_1` sits two directories below the root: `../../`.
  const depth = Math.max(0, from.split('/').length - 2);
  return '../'.repeat(depth) + target.slice(1);
}

/** A path from the bridge's root: one `/`, not `//host` (another origin), nor a full URL. */
const ROOT_PATH = /^\/(?![/\\])/;

export function isRootPath(value: string): boolean {
  return ROOT_PATH.test(value);
}

/**
 * The console's markup with every address attribute that names a path from the bridge's root
 * (links, forms, the asset tags, the progress view's poll address) made relative to `from`.
 * Values from a vendor or a person never match: the `html` tag escapes their quotes, so only the
 * console's own attributes start with `="/`; and only http(s) URLs become their links.
 */
const ADDRESS_ATTRIBUTE = /(\s(?:href|action|src|data-poll)=")\/(?![/\\])/g;

export function relativeLinks(from: string, markup: string): string {
  const up = relativeTo(from, '/');
  return markup.replace(ADDRESS_ATTRIBUTE, (_match, attribute: string) => attribute + up);
}
