import { z } from 'zod';
import type { AdapterDefinition } from '../../src/contracts/adapter.js';
import { channelRoute } from '../../src/contracts/channel.js';
import { issuesFromZod, ValidationError } from '../../src/errors.js';

/**
 * A minimal adapter for testing the core on its own, written as a new vendor would be (one
 * definition, pure decode and render): its webhook turns `{event, email?, phone?, person?,
 * visitor, name?, at?}` into one observation and answers with the contact's id.
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

interface EchoChannel {
  id: string;
  greeting: string;
}

export const echoAdapter: AdapterDefinition<EchoChannel> = {
  vendor: 'echo',
  displayName: 'Echo',
  channelSettings: z.object({ greeting: z.string().default('hello') }),
  identifierKinds: ['visitor'],
  intake: [
    {
      kind: 'webhook',
      body: 'json',
      doc: { summary: 'Echo webhook' },
      decode(request, channel) {
        const parsed = bodySchema.safeParse(request.body);
        if (!parsed.success) throw new ValidationError('invalid echo payload', issuesFromZod(parsed.error));
        const body = parsed.data;
        const at = body.at ?? request.receivedAt.toISOString();
        return {
          kind: 'observe',
          event: body.event,
          observations: [
            {
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
            },
          ],
        };
      },
      render: (result) => ({
        body: { ok: true, contactId: result.contact?.id, duplicate: result.duplicate },
      }),
    },
    {
      kind: 'lookup',
      path: 'greeting',
      body: 'json',
      doc: { summary: 'says hello to the person named in the body' },
      decode(request) {
        const person = z.object({ person: z.string().min(1) }).safeParse(request.body);
        if (!person.success) throw new ValidationError('invalid greeting', issuesFromZod(person.error));
        return {
          kind: 'lookup',
          event: 'greeting',
          identifier: { kind: 'person', value: person.data.person },
          facts: { deadlineMs: 500, max: 5 },
        };
      },
      render: (result, channel) => ({
        body: {
          greeting: `${channel.greeting} ${result.decoded.kind === 'lookup' ? result.decoded.identifier.value : ''}`,
          known: result.contact !== null,
        },
      }),
    },
  ],
  create(_context, channel) {
    const greeting = (channel as { greeting?: string }).greeting ?? 'hello';
    return {
      state: { id: channel.id, greeting },
      routes: [
        channelRoute({
          method: 'POST',
          path: 'things',
          summary: 'echoes a JSON body',
          body: z.unknown(),
          async handle({ body }) {
            return { status: 201, body: { got: body } };
          },
        }),
      ],
    };
  },
};
