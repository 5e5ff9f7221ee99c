/**
 * Speaking to the web console over HTTP like a browser without JavaScript would: cookies kept by
 * hand, forms posted urlencoded, redirects not followed (tests look at them).
 */
export interface ConsolePage {
  status: number;
  text: string;
  headers: Headers;
  location: string | null;
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
  return {
    status: response.status,
    text: await response.text(),
    headers: response.headers,
    location: response.headers.get('location'),
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
