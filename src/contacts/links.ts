/**
 * Links shown to agents (crm_link, LiveTex crmLink, url-type facts) are opened by a click in
 * the vendor's agent app: only absolute http(s) URLs may reach it. `javascript:`, `data:` and
 * anything else are dropped, and the caller counts the drop (issue 10 item 10). The test is
 * isHttpUrl below, the one JivoChat's answer applies to its links, so a link kept here is not
 * dropped there uncounted. (`new URL` alone takes "http:example.com" as http://example.com/: such a
 * link used to be kept and counted as safe, then silently left out of JivoChat's answer.)
 */
export function isHttpLink(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const trimmed = value.trim();
  return trimmed !== '' && trimmed.length <= 2048 && isHttpUrl(trimmed);
}

const HTTP_URL_START = /^https?:\/\//i;

/**
 * What an `httpUrlSchema` (zod's z.url with an http(s) protocol) accepts, without zod's per-call
 * payload and result objects or a URL object: zod first requires "http://" or "https://" (any
 * case), then that WHATWG URL parses the text — whose scheme is then http or https. For JivoChat's
 * answer links (safeLink), two or three a webhook; through zod it cost ~9 µs a call in the serving bridge
 * (profiled). adapters/jivochat/codec.test.ts holds it equal to the schema on generated URLs.
 */
export function isHttpUrl(trimmed: string): boolean {
  return HTTP_URL_START.test(trimmed) && URL.canParse(trimmed);
}
