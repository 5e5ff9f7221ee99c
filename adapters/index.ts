import type { AdapterDefinition } from '../src/spec/adapter.js';
import { chatvisorAdapter } from './chatvisor/index.js';
import { jivochatAdapter } from './jivochat/index.js';
import { livetexAdapter } from './livetex/index.js';

/**
 * Every vendor adapter, registered in exactly one place. Adding a vendor = a folder under
 * adapters/ plus one line here.
 */
export const adapters: AdapterDefinition[] = [jivochatAdapter, livetexAdapter, chatvisorAdapter];
