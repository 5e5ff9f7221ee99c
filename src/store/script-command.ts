import { Command, type Redis } from 'ioredis';
import { digestUtf8 } from '../digest.js';

/**
 * Calls of the store's two hot Lua scripts (the guarded batch and readGroups: one each per
 * observation), written to the socket as one Buffer made here instead of through ioredis's
 * Script and Command. Why not ioredis's own: its Command copies and flattens the arguments,
 * prefixes each key, and writes the RESP text by concatenating a string per argument, and its
 * byte lengths cost a UTF-8 pass over every argument before the socket's own encoding makes a
 * second. A guarded batch has ~50 arguments; a chat_finished one carries a timeline entry of
 * ~30,000 UTF-16 units of Cyrillic, for which each of those passes costs ~30–40 µs in Node 20
 * (V8's Utf8Length/WriteUtf8, not simdutf). Here the keys are prefixed while writing, the short
 * arguments go into one string per run, and each long argument is encoded to UTF-8 exactly once,
 * which also gives its length. The bytes on the wire are what ioredis writes (test:
 * test/store.script-command.test.ts compares them).
 *
 * What ioredis's Script does and this keeps: EVAL with the script text the first time on each
 * connection, EVALSHA after; a NOSCRIPT reply (the server was restarted or flushed its scripts)
 * forgets that the connection has it and sends the call once more, as EVAL. Everything else
 * (queueing, timeouts, replies, reconnection and resending) is ioredis's, through sendCommand.
 * Not for a Cluster client (it routes a command by its arguments, which this command does not
 * show it): the store uses ioredis's defineCommand there.
 */

/** Arguments up to this many UTF-16 units are framed as text; longer ones are encoded on their own. */
const LONG_ARGUMENT = 1024;

/** A Buffer is sent as its bytes (an outbox entry set aside as it was read). */
export type ScriptArgument = string | number | Buffer;

export type ScriptCall = (keys: readonly string[], args: readonly ScriptArgument[]) => Promise<unknown>;

/** A caller of `lua` on `client`, whose keys get `keyPrefix` (ioredis's keyPrefix is not applied). */
export function scriptCall(client: Redis, lua: string, keyPrefix: string): ScriptCall {
  const sha = digestUtf8('sha1', lua, 'hex');
  /** Sockets this script was sent to with EVAL (so EVALSHA finds it), as ioredis's Script keeps them. */
  const loaded = new WeakSet<object>();

  class ScriptCommand extends Command {
    constructor(
      private readonly callKeys: readonly string[],
      private readonly callArgs: readonly ScriptArgument[],
    ) {
      // No arguments for ioredis to process: they are written by toWritable. Replies as strings,
      // as ioredis's defined commands give them.
      super('evalsha', [], { replyEncoding: 'utf8' });
    }

    override toWritable(socket: object): Buffer {
      const withText = !loaded.has(socket);
      if (withText) loaded.add(socket);
      this.name = withText ? 'eval' : 'evalsha';
      const reject = this.reject;
      this.reject = (error: Error) => {
        if (error.message.includes('NOSCRIPT')) loaded.delete(socket);
        reject.call(this, error);
      };
      return encodeCall(this.name, withText ? lua : sha, this.callKeys, keyPrefix, this.callArgs);
    }
  }

  return async (keys, args) => {
    try {
      return await client.sendCommand(new ScriptCommand(keys, args));
    } catch (error) {
      if (!(error instanceof Error) || !error.message.includes('NOSCRIPT')) throw error;
      // The connection lost the script: this one goes as EVAL (see toWritable).
      return client.sendCommand(new ScriptCommand(keys, args));
    }
  };
}

/**
 * Where long items are encoded before they are copied into the call's Buffer: reused, so a
 * chat_finished entry does not cost a fresh ~90 KB allocation each time. Calls are encoded
 * synchronously, one at a time, so one arena serves them all.
 */
const arena = Buffer.allocUnsafeSlow(256 * 1024);

/**
 * `<name> <script> <numkeys> <keys…> <args…>` as RESP: an array of bulk strings. Short items and
 * the framing are gathered into text runs (each written with one UTF-8 encode); a long item is
 * encoded once, which gives its length for the frame, and copied.
 */
export function encodeCall(
  name: string,
  script: string,
  keys: readonly string[],
  keyPrefix: string,
  args: readonly ScriptArgument[],
): Buffer {
  /** Text runs and, between them, long items' bytes (a view of `arena`, or a Buffer of their own). */
  const chunks: Array<string | Buffer> = [];
  let parts: string[] = [`*${3 + keys.length + args.length}\r\n$${name.length}\r\n${name}\r\n`];
  let used = 0;
  const put = (item: string) => {
    if (item.length <= LONG_ARGUMENT) {
      parts.push(`$${Buffer.byteLength(item, 'utf8')}\r\n`, item, '\r\n');
      return;
    }
    let bytes: Buffer;
    if (used + item.length * 3 <= arena.length) {
      bytes = arena.subarray(used, used + arena.write(item, used, 'utf8'));
      used += bytes.length;
    } else {
      bytes = Buffer.from(item, 'utf8');
    }
    chunks.push(`${parts.join('')}$${bytes.length}\r\n`, bytes);
    parts = ['\r\n'];
  };
  const putBytes = (bytes: Buffer) => {
    chunks.push(`${parts.join('')}$${bytes.length}\r\n`, bytes);
    parts = ['\r\n'];
  };
  put(script);
  put(String(keys.length));
  for (const key of keys) put(keyPrefix + key);
  for (const arg of args) {
    if (typeof arg === 'string') put(arg);
    else if (typeof arg === 'number') put(String(arg));
    else putBytes(arg);
  }
  const tail = parts.join('');
  if (chunks.length === 0) return Buffer.from(tail, 'utf8');
  chunks.push(tail);
  let total = 0;
  for (const chunk of chunks)
    total += typeof chunk === 'string' ? Buffer.byteLength(chunk, 'utf8') : chunk.length;
  const out = Buffer.allocUnsafe(total);
  let offset = 0;
  for (const chunk of chunks)
    offset += typeof chunk === 'string' ? out.write(chunk, offset, 'utf8') : chunk.copy(out, offset);
  return out;
}
