import { describe, expect, it } from 'vitest';
import { bothWays, cliCommand, shellOption, shellWord } from '../src/cli/named.js';
import { html } from '../src/console/html.js';

/** How the bridge's texts name a CLI command (src/cli/named.ts): one sentence, any value quoted. */
describe('a CLI command a text names', () => {
  it('quotes a value as a POSIX shell needs it, and puts one starting with - after =', () => {
    expect(shellWord('config/crm.example.yaml')).toBe('config/crm.example.yaml');
    expect(shellWord('my configs/bridge.yaml')).toBe("'my configs/bridge.yaml'");
    expect(shellWord("it's")).toBe("'it'\\''s'");
    expect(shellWord('$HOME')).toBe("'$HOME'");
    expect(shellOption('destination', 'amo main')).toBe("--destination 'amo main'");
    expect(shellOption('config', '-x.yaml')).toBe('--config=-x.yaml');
  });

  it('is the same sentence in a plain text and on a console page, escaped there', () => {
    const words = "crm check --destination 'a<b'";
    expect(cliCommand(words)).toBe(
      "`chatbridge crm check --destination 'a<b'` (in a checkout: `node bin/chatbridge.js crm check --destination 'a<b'`)",
    );
    const page = bothWays(words, html, (form) => html`<code>${form}</code>`).value;
    expect(page).toBe(
      '<code>chatbridge crm check --destination &#39;a&lt;b&#39;</code> (in a checkout: <code>node bin/chatbridge.js crm check --destination &#39;a&lt;b&#39;</code>)',
    );
    // The page's text is the plain text's, code marked the other way.
    const decoded = page
      .replaceAll(/<\/?code>/g, '`')
      .replaceAll('&#39;', "'")
      .replaceAll('&lt;', '<');
    expect(decoded).toBe(cliCommand(words));
  });
});
