// Requests through the sidecar with global-agent (for code on Node's http/https modules, such
// as axios), for tests/e2e/protocols/node.rs.
// Usage: node -r GLOBAL_AGENT_DIR/bootstrap -e "$(cat global_agent_client.js)" -- URL... ; the
// proxy comes from GLOBAL_AGENT_HTTP_PROXY (global-agent's own variable), the sidecar's CA from
// NODE_EXTRA_CA_CERTS. Prints one JSON line per request.
const urls = process.argv.slice(1);

function get(url) {
  const client = url.startsWith('https:') ? require('https') : require('http');
  return new Promise((resolve, reject) => {
    client
      .get(url, { headers: { authorization: 'Bearer {/auth_token}' } }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode, body }));
      })
      .on('error', reject);
  });
}

(async () => {
  for (const url of urls) {
    const { status, body } = await get(url);
    console.log(JSON.stringify({ step: `global-agent ${url}`, status, body }));
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
