import { cleanDisplayText, clipText, cutText } from '../contacts/normalize.js';
import { type HttpClient, HttpNetworkError, redactUrl, scrubSecrets, urlSecrets } from '../net/http.js';
import { isRetryableStatus, parseRetryAfter } from '../net/retry.js';

/** What one HTTP attempt came to. */
export type AttemptResult =
  | { kind: 'delivered'; status: number }
  /** 408, 429, 5xx, network error or timeout: try again on the schedule. */
  | { kind: 'retry'; status: number | null; message: string; retryAfterMs?: number }
  /** Any other answer (4xx, and 3xx: we do not follow redirects with a signed body): retrying will not help. */
  | { kind: 'permanent'; status: number; message: string };

/** How much of a receiver's answer is read: more would only be cut from the error excerpt. */
const RESPONSE_BYTES = 64 * 1024;

/** How many characters of the receiver's answer the error keeps. */
const EXCERPT_CHARS = 200;

/**
 * Enough of the receiver's answer to tell an operator why, without keeping a whole error page.
 * The receiver is another party's server and the text is shown to people — the API, the console
 * and `chatbridge deliveries list`, which prints it to a terminal — so it is made showable as a
 * contact's name is (cleanDisplayText): an answer holding ESC sequences cleared or retitled the
 * operator's terminal, and a bidi override reversed the rest of the line. The cut never falls
 * inside a character: one between the halves of an emoji kept a lone surrogate, which strict
 * JSON readers of the API refuse for the whole answer.
 */
function excerpt(text: string): string {
  const flat = (cleanDisplayText(text) ?? '').replace(/\s+/g, ' ');
  return flat.length <= EXCERPT_CHARS ? flat : `${cutText(flat, EXCERPT_CHARS)}…`;
}

/** Characters of a redirect's target quoted in the error. */
const REDIRECT_NOTE_MAX = 300;

/**
 * A redirect is not followed (the signed body would go to a URL nobody configured, and a 303
 * would turn the POST into a GET): the error says where it pointed, credentials hidden, so the
 * operator can put that URL in the config. Receivers often answer an http:// URL with a 301 to
 * https:// and an empty body, which left only "HTTP 301" to go on.
 */

function redirectNote(
  status: number,
  location: string | undefined,
  url: string,
  secrets: readonly string[],
): string {
  if (status < 300 || status >= 400 || !location) return '';
  let target: string;
  try {
    // The target is the receiver's text, as its answer is: a Location that quotes a configured
    // header value (redactUrl hides query values and token-like path segments, not a short word
    // or a host name) is scrubbed alike, before the cut, so no part of one shows.
    target = scrubSecrets(redactUrl(new URL(location, url).toString()), secrets);
  } catch {
    return ' (a redirect, not followed)';
  }
  // A Location header may be kilobytes long (a receiver's own token in it, or junk): the note is
  // kept as short as the answer's excerpt, marked where cut.
  return ` (redirect to ${clipText(target, REDIRECT_NOTE_MAX)}, not followed: set the destination's url to where it points)`;
}

export async function attemptDelivery(
  http: HttpClient,
  request: {
    url: string;
    headers: Record<string, string>;
    body: string;
    timeoutMs: number;
    signal?: AbortSignal;
    /**
     * Values that must not reach the record (the destination's configured header values, see
     * headerSecrets), besides the URL's credentials, which are always hidden.
     */
    secrets?: readonly string[];
  },
  now: number,
): Promise<AttemptResult> {
  let response: Awaited<ReturnType<HttpClient['send']>>;
  try {
    response = await http.send({
      method: 'POST',
      url: request.url,
      headers: request.headers,
      body: request.body,
      timeoutMs: request.timeoutMs,
      // Only the status decides; the body is kept for an error excerpt of 200 characters.
      statusIsAnswer: true,
      // A 2xx body is never used: the delivery is done once the status is in.
      bodyWanted: (status) => status < 200 || status >= 300,
      maxResponseBytes: RESPONSE_BYTES,
      ...(request.signal ? { signal: request.signal } : {}),
    });
  } catch (error) {
    if (error instanceof HttpNetworkError) return { kind: 'retry', status: null, message: error.message };
    throw error;
  }
  const { status } = response;
  if (status >= 200 && status < 300) return { kind: 'delivered', status };
  // A receiver may echo the URL it was called on, or the headers it got: their credentials must
  // not reach the record (shown by the API, the CLI and the console) or the log.
  const secrets = [...urlSecrets(request.url), ...(request.secrets ?? [])];
  const detail = excerpt(scrubSecrets(response.text, secrets));
  const message = `HTTP ${status}${redirectNote(status, response.headers.location, request.url, secrets)}${detail ? `: ${detail}` : ''}`;
  if (isRetryableStatus(status)) {
    const retryAfterMs = parseRetryAfter(response.headers['retry-after'], now);
    return { kind: 'retry', status, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
  }
  return { kind: 'permanent', status, message };
}
