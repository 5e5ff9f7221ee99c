import { z } from 'zod';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { issuesFromZod, ValidationError } from '../../src/errors.js';

/**
 * A minimal adapter for testing the core on its own: its webhook turns `{event, email?, phone?,
 * person?, visitor, name?, at?}` into one observation, like a real vendor adapter would.
 */
const bodySchema = z.object({
  event: z.string(),
  visitor: z.union([z.string(), z.number()]).transform(String),
  email: z.string().optional(),
  phone: z.string().optional(),
  person: z.string().optional(),
  name: z.string().optional(),
  at: z.string().optional(),
  text: z.string().optional(),
});

export const echoAdapter: AdapterDefinition = {
  vendor: 'echo',
  displayName: 'Echo',
  channelSettings: z.object({ greeting: z.string().default('hello') }),
  create(context, channel) {
    return {
      async handleWebhook(request) {
        const parsed = bodySchema.safeParse(request.json());
        if (!parsed.success) {
          throw new ValidationError('invalid echo payload', issuesFromZod(parsed.error));
        }
        const body = parsed.data;
        const at = body.at ?? context.now().toISOString();
        const result = await context.contacts.observe({
          channelId: channel.id,
          vendor: 'echo',
          at,
          idempotencyKey: `${body.event}:${body.visitor}:${at}`,
          identifiers: [
            { kind: 'visitor', value: body.visitor },
            ...(body.email ? [{ kind: 'email', value: body.email }] : []),
            ...(body.phone ? [{ kind: 'phone', value: body.phone }] : []),
            ...(body.person ? [{ kind: 'person', value: body.person }] : []),
          ],
          names: body.name ? [body.name] : [],
          timeline: [{ at, type: 'message.received', summary: body.text ?? body.event }],
          events: [{ type: 'message.received', data: { text: body.text ?? '' } }],
        });
        return {
          body: { ok: true, contactId: result.contact.id, duplicate: result.duplicate },
          event: body.event,
        };
      },
      routes: [
        {
          method: 'GET',
          path: 'greeting/:name',
          scope: 'public',
          summary: 'says hello',
          async handle(request) {
            return {
              body: { greeting: `${(channel as { greeting?: string }).greeting} ${request.params.name}` },
            };
          },
        },
        {
          method: 'POST',
          path: 'things',
          scope: 'admin',
          summary: 'echoes a JSON body',
          async handle(request) {
            return { status: 201, body: { got: request.json() } };
          },
        },
      ],
    };
  },
};
