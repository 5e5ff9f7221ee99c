import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logger.js';
import { allVendorChannels, rawRequest, startLoggedBridge } from './support.js';

/** Issue 10 item 9: vendor-controlled strings are cut in logs. */
describe('log lines stay small whatever a vendor sends', () => {
  it('cuts long string fields, nested ones, errors and the message', () => {
    const lines: string[] = [];
    const logger = createLogger(
      'info',
      new Writable({
        write(chunk, _encoding, callback) {
          lines.push(chunk.toString());
          callback();
        },
      }),
    );
    const huge = 'e'.repeat(200_000);
    logger.info({ event: huge, nested: { reason: huge, list: [huge, huge] } }, huge);
    logger.warn({ err: new Error(huge) }, 'failed');
    logger.info(`unknown event ${huge}`);
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line.length).toBeLessThan(12_000);
    expect(lines[0]).toContain('…(+');
  });

  it('over HTTP: a 300 KB event name or status does not make a 300 KB log line', async () => {
    const running = await startLoggedBridge({
      channels: allVendorChannels,
      server: { port: 0, host: '127.0.0.1', bodyLimitBytes: 2_000_000 },
    });
    const huge = 'x'.repeat(300_000);
    try {
      await rawRequest(running.url, 'POST', `/webhooks/jivochat/site/${allVendorChannels[0]!.token}`, {
        body: JSON.stringify({ event_name: huge, chat_id: 1 }),
      });
      await rawRequest(running.url, 'POST', `/webhooks/livetex/app/${allVendorChannels[1]!.token}`, {
        body: JSON.stringify({ event: huge, Conversation: { id: huge } }),
      });
      await rawRequest(running.url, 'POST', `/webhooks/chatvisor/cobrowse/${allVendorChannels[2]!.token}`, {
        body: JSON.stringify({ customerId: huge, status: huge }),
      });
    } finally {
      await running.close();
    }
    for (const line of running.lines) expect(line.length).toBeLessThan(12_000);
  });
});
