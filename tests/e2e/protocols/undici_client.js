// fetch through the sidecar with undici's EnvHttpProxyAgent, for tests/e2e/protocols/node.rs.
// Usage: node -e "$(cat undici_client.js)" -- UNDICI_DIR URL... ; the proxy comes from http_proxy /
// https_proxy, the sidecar's CA from NODE_EXTRA_CA_CERTS. Each URL is fetched three times:
// with undici's own fetch and with Node's built-in fetch (both use the global dispatcher),
// and with an agent that allows h2 and is given the CA itself (requestTls). Prints one JSON
// line per fetch.
// With -e, the arguments after `--` start at argv[1].
const [undiciDir, ...urls] = process.argv.slice(1);
const { EnvHttpProxyAgent, setGlobalDispatcher, fetch: undiciFetch } = require(undiciDir);
const fs = require('fs');

setGlobalDispatcher(new EnvHttpProxyAgent());
const h2 = new EnvHttpProxyAgent({ allowH2: true, requestTls: { ca: fs.readFileSync(process.env.NODE_EXTRA_CA_CERTS) } });
const h2Fetch = (url, options) => undiciFetch(url, { ...options, dispatcher: h2 });

(async () => {
  for (const url of urls) {
    for (const [which, fetch] of [['undici', undiciFetch], ['builtin', globalThis.fetch], ['h2', h2Fetch]]) {
      const response = await fetch(url, { headers: { authorization: 'Bearer {/auth_token}' } });
      console.log(JSON.stringify({ step: `${which} ${url}`, status: response.status, body: await response.text() }));
    }
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
