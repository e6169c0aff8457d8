// node-oidc-provider configured as the plain OAuth 2.0 code flow Otesse runs, so that
// `make bench-peer` can measure both with the same requests. See bench/README.md ("The
// reference: node-oidc-provider") for why each setting is what it is.
//
//   PEER_PORT            the loopback port to listen on
//   PEER_STORAGE         `memory` (the provider's own in-memory adapter) or `redis`
//   PEER_REDIS_URL       with `redis`: the server, e.g. redis://127.0.0.1:6379/0
//   PEER_REDIS_PREFIX    with `redis`: the prefix of every key it writes
//   PEER_CLIENT_ID, PEER_CLIENT_SECRET, PEER_REDIRECT_URI, PEER_SCOPE   the one client
//
// It prints `listening on <issuer>` once it answers.
import * as crypto from 'node:crypto';
import * as http from 'node:http';

import QuickLRU from 'quick-lru';
import Provider from 'oidc-provider';
import { setStorage } from 'oidc-provider/lib/adapters/memory_adapter.js';

import { redisAdapter } from './redis_adapter.mjs';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`peer: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('PEER_PORT'));
const storage = required('PEER_STORAGE');
const clientId = required('PEER_CLIENT_ID');
const clientSecret = required('PEER_CLIENT_SECRET');
const redirectUri = required('PEER_REDIRECT_URI');
const scope = required('PEER_SCOPE');
const issuer = `http://127.0.0.1:${port}`;
// Otesse's access tokens are for its APIs: the same audience here.
const audience = 'https://api.otesse.com';

let adapter;
let closeStore = async () => {};
if (storage === 'redis') {
  ({ Adapter: adapter, close: closeStore } = redisAdapter(
    required('PEER_REDIS_URL'),
    required('PEER_REDIS_PREFIX'),
  ));
} else if (storage === 'memory') {
  // The provider's own in-memory adapter, unchanged, but with room for every code a
  // measurement mints before the next one exchanges them: its default store is an LRU of 1000
  // entries, which would evict codes (and the session) during a 5000-request measurement.
  setStorage(new QuickLRU({ maxSize: 10_000_000 }));
} else {
  console.error(`peer: PEER_STORAGE must be memory or redis, not ${storage}`);
  process.exit(2);
}

// One ES256 key, as Otesse signs its access tokens (a P-256 key, made for this run).
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bench', alg: 'ES256', use: 'sig' };

const provider = new Provider(issuer, {
  adapter,
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  // No id_token is ever made (the flow never asks for `openid`); the key is ES256 only.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // PKCE S256 for every client (Otesse honours it for confidential clients; the benchmark
  // sends it to both servers so both do the same check).
  pkce: { methods: ['S256'], required: () => true },
  scopes: ['openid'],
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: false },
    // Access tokens for Otesse's API as ES256 JWTs, like Otesse's (RFC 9068), never stored.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope,
        audience,
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  // Every authorization code grant gets a refresh token (not only `offline_access` ones),
  // rotated on every use, living 30 days whatever happens to the browser session.
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  expiresWithSession: () => false,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    RefreshToken: 30 * 24 * 3600,
    Grant: 30 * 24 * 3600,
    Interaction: 3600,
    Session: 12 * 3600,
  },
});

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString());
}

// The login and consent steps, driven once by the benchmark with plain form posts:
// POST /interaction/<uid>/login (account=<id>) signs that account in; POST
// /interaction/<uid>/consent grants the scopes the request is missing. Both answer with the
// provider's redirect back to the authorization request.
async function interaction(req, res) {
  const [, , uid, action] = new URL(req.url, issuer).pathname.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ uid, prompt: details.prompt.name }));
    return;
  }
  const form = await readForm(req);
  if (action === 'login' && details.prompt.name === 'login') {
    const result = { login: { accountId: form.get('account') } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } else if (action === 'consent' && details.prompt.name === 'consent') {
    const grant = new provider.Grant({
      accountId: details.session.accountId,
      clientId: details.params.client_id,
    });
    const missing = details.prompt.details.missingResourceScopes || {};
    for (const [resource, scopes] of Object.entries(missing)) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
  } else {
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`unexpected ${action} at prompt ${details.prompt.name}\n`);
  }
}

const handle = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`${error.name}: ${error.message}\n`);
    });
  } else {
    handle(req, res);
  }
});
// Otesse's servers keep idle keep-alive connections 5 s (uvicorn); the same here.
server.keepAliveTimeout = 5000;

provider.on('server_error', (ctx, error) => console.error('peer: server_error', error));

function stop() {
  server.close(() => closeStore().finally(() => process.exit(0)));
  server.closeIdleConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(port, '127.0.0.1', () => {
  console.log(`listening on ${issuer} (storage: ${storage})`);
});
