import type { AdapterDefinition } from '../src/contracts/adapter.js';
import type { ConnectorDefinition } from '../src/contracts/connector.js';
import { amocrmConnector } from './amocrm/index.js';
import { bitrix24Connector } from './bitrix24/index.js';
import { chatvisorAdapter } from './chatvisor/index.js';
import { jivochatAdapter } from './jivochat/index.js';
import { livetexAdapter } from './livetex/index.js';

/**
 * Every vendor adapter, registered in exactly one place. Adding a vendor = a folder under
 * adapters/ plus one line here.
 */
export const adapters: AdapterDefinition[] = [jivochatAdapter, livetexAdapter, chatvisorAdapter];

/**
 * Every CRM connector (the outbound side: destinations with `kind: <kind>`, DESIGN §10),
 * registered here too. Adding a CRM = a folder under adapters/ plus one line here.
 */
export const connectors: ConnectorDefinition[] = [amocrmConnector, bitrix24Connector];
