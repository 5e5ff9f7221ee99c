import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Agent links (DESIGN §11): `{consoleUrl}` in a channel's reply.crmLink becomes
 * `<publicUrl>/console/c/<token>`, a read-only view of one contact that needs no sign-in.
 *
 * The token is `<contactId>.<expiry, unix seconds>.<HMAC-SHA256>`: nothing secret is in it, and
 * anyone who changes the contact or the expiry breaks the MAC. The MAC key is derived from
 * secrets.masterKey with its own label, so the link key is never the key that seals LiveTex keys.
 */
export interface AgentLinks {
  /** The path `/console/c/<token>` for a contact, valid for the configured TTL from now. */
  path(contactId: string): string;
  /** The absolute URL, or undefined when server.publicUrl is not set (links need a public address). */
  url(contactId: string): string | undefined;
  /** The contact id of a valid, unexpired token; `null` when tampered, malformed or expired. */
  verify(token: string): { contactId: string; expiresAt: Date } | null;
}

const CONTACT_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The path of an agent link as url() makes it: `…/console/c/<contactId>.<expiry>.<mac>`. */
const AGENT_LINK_PATH = /\/console\/c\/[A-Za-z0-9_-]{1,64}\.\d{1,12}\.[A-Za-z0-9_-]+$/;

/**
 * Whether a URL has the shape of one of our agent links (no key needed: the MAC is not checked).
 * A vendor that echoes the link we answered (JivoChat's chat_assigned `assign_to`) must not make
 * an expiring console link the contact's CRM link.
 */
export function isAgentLinkUrl(url: string): boolean {
  if (!URL.canParse(url)) return false;
  return AGENT_LINK_PATH.test(new URL(url).pathname);
}

export function createAgentLinks(options: {
  masterKey: Buffer;
  ttlMs: number;
  publicUrl: string | undefined;
  now: () => Date;
}): AgentLinks {
  const key = createHmac('sha256', options.masterKey).update('chatbridge/console-agent-link/v1').digest();
  const mac = (payload: string) => createHmac('sha256', key).update(payload).digest('base64url');

  function token(contactId: string): string {
    const expires = Math.floor((options.now().getTime() + options.ttlMs) / 1000);
    const payload = `${contactId}.${expires}`;
    return `${payload}.${mac(payload)}`;
  }

  return {
    path(contactId) {
      return `/console/c/${token(contactId)}`;
    },
    url(contactId) {
      if (!options.publicUrl) return undefined;
      return `${options.publicUrl.replace(/\/+$/, '')}/console/c/${token(contactId)}`;
    },
    verify(text) {
      const parts = text.split('.');
      if (parts.length !== 3) return null;
      const [contactId, expires, given] = parts as [string, string, string];
      if (!CONTACT_ID.test(contactId) || !/^\d{1,12}$/.test(expires)) return null;
      const expected = Buffer.from(mac(`${contactId}.${expires}`));
      const actual = Buffer.from(given);
      if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return null;
      const expiresAt = new Date(Number(expires) * 1000);
      if (expiresAt.getTime() <= options.now().getTime()) return null;
      return { contactId, expiresAt };
    },
  };
}
