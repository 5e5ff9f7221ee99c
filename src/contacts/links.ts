/**
 * Links shown to agents (crm_link, LiveTex crmLink, url-type facts) are opened by a click in
 * the vendor's agent app: only absolute http(s) URLs may reach it. `javascript:`, `data:` and
 * anything else are dropped, and the caller counts the drop (issue 10 item 10).
 */
export function isHttpLink(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const trimmed = value.trim();
  if (trimmed === '' || trimmed.length > 2048) return false;
  try {
    const parsed = new URL(trimmed);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:';
  } catch {
    return false;
  }
}
