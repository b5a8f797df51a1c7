// A real OpenID Connect provider for the mss tests (npm oidc-provider 9.x), started by
// tests/oidc.py: `node provider.mjs CONFIG.json`. One issuer per process, HTTPS only.
//
// CONFIG.json (written by tests/oidc.py):
//   issuer, host, port, cert_file, key_file, jwks_file (private JWKs; the first signs),
//   clients: [{client_id, client_secret, redirect_uris, access_ttl, acr}],
//   resources: {"<resource indicator>": {"format": "jwt" | "opaque", "scope": "mail"}}
//
// Commands on stdin, one a line, each answered on stdout by one line:
//   reload      re-read jwks_file (signing-key rotation) -> "reloaded <kid of the signer>"
//   jwks down   the JWKS endpoint answers 503            -> "jwks down"
//   jwks up     it answers again                          -> "jwks up"
// Grants, sessions and opaque tokens live in the memory adapter, shared by the Provider
// instances of this process, so a reload keeps them.
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as readline from 'node:readline';

import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const clients = new Map(config.clients.map((c) => [c.client_id, c]));
let jwksDown = false;

function makeProvider() {
  const jwks = JSON.parse(fs.readFileSync(config.jwks_file, 'utf8'));
  const provider = new Provider(config.issuer, {
    jwks,
    cookies: { keys: ['mss-test-cookie-key-not-secret'] },
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: c.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    pkce: { required: () => true },
    claims: { openid: ['sub'], profile: ['preferred_username', 'SubjectNameID'] },
    conformIdTokenClaims: false, // the ID token carries preferred_username (the idNat)
    // accountId = the idNat (PSC: "8" + RPPS), the login typed in the dev form
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() { return { sub: id, preferred_username: id, SubjectNameID: id }; },
      };
    },
    // PSC's access tokens carry the idNat in preferred_username and the eIDAS level in acr
    async extraTokenClaims(ctx, token) {
      const client = clients.get(token.clientId);
      const claims = { preferred_username: token.accountId, SubjectNameID: token.accountId };
      if (client && client.acr) claims.acr = client.acr;
      return claims;
    },
    features: {
      devInteractions: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf,
        useGrantedResource: () => true,
        async getResourceServerInfo(ctx, resourceIndicator, client) {
          const rs = config.resources[resourceIndicator];
          if (!rs) throw new Error(`unknown resource ${resourceIndicator}`);
          const ttl = clients.get(client.clientId)?.access_ttl ?? 300;
          return {
            scope: rs.scope,
            audience: resourceIndicator,
            accessTokenTTL: ttl,
            accessTokenFormat: rs.format,
            ...(rs.format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
          };
        },
      },
    },
    ttl: {
      AccessToken: (ctx, token, client) => clients.get(client.clientId)?.access_ttl ?? 300,
      IdToken: 300,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  });
  // the dev pages import a web font from the Internet: a browser driven by a test must
  // reach loopback only, so the import is cut out and a CSP forbids any other fetch
  provider.use(async (ctx, next) => {
    await next();
    if (typeof ctx.body === 'string' && ctx.response.is('html')) {
      ctx.body = ctx.body.replace(/@import url\(https?:[^)]*\);?/g, '');
      ctx.set('Content-Security-Policy',
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'");
    }
  });
  return { provider, handler: provider.callback() };
}

let current = makeProvider();

const server = https.createServer({
  cert: fs.readFileSync(config.cert_file),
  key: fs.readFileSync(config.key_file),
}, (req, res) => {
  if (jwksDown && req.url.startsWith('/jwks')) {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('jwks down for the test\n');
    return;
  }
  current.handler(req, res);
});

function signerKid() {
  return JSON.parse(fs.readFileSync(config.jwks_file, 'utf8')).keys[0].kid;
}

server.listen(config.port, config.host, () => {
  process.stdout.write(`listening ${config.issuer} ${signerKid()}\n`);
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = line.trim();
  if (command === 'reload') {
    current = makeProvider();
    process.stdout.write(`reloaded ${signerKid()}\n`);
  } else if (command === 'jwks down' || command === 'jwks up') {
    jwksDown = command === 'jwks down';
    process.stdout.write(`${command}\n`);
  } else {
    process.stdout.write(`error unknown command ${command}\n`);
  }
}).on('close', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
