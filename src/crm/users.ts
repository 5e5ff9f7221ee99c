import type { CrmApi, CrmUser } from '../contracts/connector.js';
import { CrmError } from './errors.js';

/**
 * The CRM's users, for "responsible = the CRM user with the agent's e-mail" (DESIGN §10):
 * listed once, then again only on a miss and at most once a minute (per instance).
 */
export const USERS_REFRESH_MS = 60_000;

export function createUserDirectory(api: () => CrmApi, now: () => number = Date.now) {
  let users: CrmUser[] | null = null;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let fetching: Promise<void> | null = null;

  async function refresh() {
    fetching ??= (async () => {
      try {
        users = await api().listUsers();
      } catch (error) {
        // A token without the right to list users (amoCRM: admins only) still delivers: the
        // agents[].crmUserId and default fallbacks apply. Anything else is the delivery's problem.
        if (!(error instanceof CrmError && error.kind === 'permanent' && error.httpStatus === 403))
          throw error;
        users ??= [];
      } finally {
        fetchedAt = now();
        fetching = null;
      }
    })();
    await fetching;
  }

  const find = (email: string) =>
    users?.find((user) => user.active && user.email !== null && user.email.toLowerCase() === email) ?? null;

  return {
    /** The CRM user id with this e-mail (case-insensitive), or null. */
    async byEmail(email: string): Promise<string | null> {
      const wanted = email.trim().toLowerCase();
      if (users === null) await refresh();
      let found = find(wanted);
      if (!found && now() - fetchedAt >= USERS_REFRESH_MS) {
        await refresh();
        found = find(wanted);
      }
      return found?.id ?? null;
    },
  };
}
