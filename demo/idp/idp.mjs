// A real OAuth 2.0 / OpenID provider for the demo and the tests: oidc-provider issuing
// RFC 9068 JWT access tokens by the client-credentials grant, with discovery and JWKS.
//   IDP_PORT (9000), IDP_ALG (ES256 | RS256), IDP_AUDIENCE (https://api.demo.local)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT || 9000);
const alg = process.env.IDP_ALG || 'ES256';
const audience = process.env.IDP_AUDIENCE || 'https://api.demo.local';
const issuer = `http://127.0.0.1:${port}`;
const scopes = 'workflow:read workflow:write';

// A fresh signing key per start: the filter must fetch it, as it would from a real IdP.
if (alg !== 'ES256' && alg !== 'RS256') throw new Error(`IDP_ALG must be ES256 or RS256, not ${alg}`);
const { privateKey } = alg === 'ES256'
  ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `demo-${alg.toLowerCase()}`, alg, use: 'sig' };

const client = (id, secret, scope) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  scope,
  // The provider signs with one key of `alg`; clients default to RS256.
  id_token_signed_response_alg: alg,
});

const provider = new Provider(issuer, {
  clients: [
    client('demo-client', 'demo-secret', 'workflow:read'),
    client('admin-client', 'admin-secret', scopes),
  ],
  jwks: { keys: [signingKey] },
  scopes: scopes.split(' '),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Clients need not name the API: every token is for it.
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: scopes,
        audience,
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`IDP READY ${issuer} (${alg})`);
});
