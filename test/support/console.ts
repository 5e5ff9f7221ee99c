/**
 * Speaking to the web console over HTTP like a browser without JavaScript would: cookies kept by
 * hand, forms posted urlencoded, redirects not followed (tests look at them).
 */
export interface ConsolePage {
  status: number;
  /**
   * The page with its addresses as a browser reads them (an element's `href`): the console writes
   * its links, forms and assets relative to the page (src/console/relative.ts), and the tests look
   * for the paths from the bridge's root they lead to. `raw` is the page as sent.
   */
  text: string;
  raw: string;
  headers: Headers;
  /**
   * Where a browser goes next: the Location header resolved against the request's address, as a
   * path from the bridge's root with its query and fragment (the console writes it relative to
   * the page, src/console/relative.ts; `headers.get('location')` has it as sent).
   */
  location: string | null;
}

/** A relative address attribute's value (not `#…`, not `/…`, no scheme) resolved to a path from the root. */
function resolvedAddresses(requested: string, page: string): string {
  return page.replace(
    /(\s(?:href|action|src|data-poll)=")(?![#/]|[a-z][a-z0-9+.-]*:)([^"]*)"/gi,
    (_match, attribute: string, value: string) => {
      const url = new URL(value, requested);
      return `${attribute}${url.pathname}${url.search}${url.hash}"`;
    },
  );
}

function resolvedLocation(requested: string, location: string | null): string | null {
  if (location === null) return null;
  const url = new URL(location, requested);
  return url.origin === new URL(requested).origin ? url.pathname + url.search + url.hash : url.href;
}

export async function consoleRequest(
  base: string,
  path: string,
  options: {
    method?: string;
    cookie?: string;
    form?: Record<string, string>;
    headers?: Record<string, string>;
  } = {},
): Promise<ConsolePage> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.cookie) headers.cookie = options.cookie;
  let body: string | undefined;
  if (options.form) {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(options.form).toString();
  }
  const response = await fetch(base + path, {
    method: options.method ?? (options.form ? 'POST' : 'GET'),
    headers,
    redirect: 'manual',
    ...(body !== undefined ? { body } : {}),
  });
  const raw = await response.text();
  return {
    status: response.status,
    text: resolvedAddresses(base + path, raw),
    raw,
    headers: response.headers,
    location: resolvedLocation(base + path, response.headers.get('location')),
  };
}

/** The `name=value` pair of a Set-Cookie header, by cookie name. */
export function cookieOf(headers: Headers, name: string): string | undefined {
  for (const line of headers.getSetCookie()) {
    const [pair] = line.split(';');
    if (pair?.startsWith(`${name}=`)) return pair;
  }
  return undefined;
}

export function fieldOf(html: string, name: string): string | undefined {
  return new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1];
}

export async function signIn(
  base: string,
  token: string,
): Promise<{ cookie: string; csrf: string; setCookie: string }> {
  const form = await consoleRequest(base, '/console/sign-in');
  const pre = cookieOf(form.headers, 'chatbridge_console_pre');
  const answer = await consoleRequest(base, '/console/sign-in', {
    cookie: pre ?? '',
    form: { _pre: fieldOf(form.text, '_pre') ?? '', next: '/console/contacts', token },
  });
  if (answer.status !== 302) throw new Error(`sign-in failed: ${answer.status} ${answer.text.slice(0, 300)}`);
  const setCookie =
    answer.headers.getSetCookie().find((line) => line.startsWith('chatbridge_console=')) ?? '';
  const cookie = cookieOf(answer.headers, 'chatbridge_console')!;
  const page = await consoleRequest(base, '/console/contacts', { cookie });
  return { cookie, csrf: fieldOf(page.text, '_csrf')!, setCookie };
}
