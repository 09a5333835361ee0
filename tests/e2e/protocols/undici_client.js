// fetch through the sidecar with undici's EnvHttpProxyAgent, for tests/e2e/protocols/node.rs.
// Usage: node -e "$(cat undici_client.js)" -- UNDICI_DIR URL... ; the proxy comes from http_proxy /
// https_proxy, the sidecar's CA from NODE_EXTRA_CA_CERTS. Each URL is fetched twice: with
// undici's own fetch and with Node's built-in fetch (both use the global dispatcher).
// Prints one JSON line per fetch.
// With -e, the arguments after `--` start at argv[1].
const [undiciDir, ...urls] = process.argv.slice(1);
const { EnvHttpProxyAgent, setGlobalDispatcher, fetch: undiciFetch } = require(undiciDir);

setGlobalDispatcher(new EnvHttpProxyAgent());

(async () => {
  for (const url of urls) {
    for (const [which, fetch] of [['undici', undiciFetch], ['builtin', globalThis.fetch]]) {
      const response = await fetch(url, { headers: { authorization: 'Bearer {/auth_token}' } });
      console.log(JSON.stringify({ step: `${which} ${url}`, status: response.status, body: await response.text() }));
    }
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
