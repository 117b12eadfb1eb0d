// An independent OIDC provider with Keycloak's layout, for NEMO's access tests (loopback only).
// Listens on an ephemeral port and prints one JSON line {"issuer": ...} on stdout once it accepts
// connections, so the test fixture synchronises on that line rather than on a sleep.
import http from 'node:http';
import Provider from 'oidc-provider';

const REALM_PREFIX = '/realms/test';
// Realm roles per client, in Keycloak's claim shape, so role checks can be tested against this provider.
const ROLES = {
  'nemo-operator': ['nemo-operator'],
  'nemo-admin': ['nemo-admin'],
  'nemo-norole': [],
};
const RESOURCES = {
  'urn:nemo:jwt': 'jwt',
  'urn:nemo:opaque': 'opaque',
};

function clients() {
  return Object.keys(ROLES).map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  }));
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}${REALM_PREFIX}`;
  const provider = new Provider(issuer, {
    clients: clients(),
    routes: {
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      introspection: '/protocol/openid-connect/token/introspect',
      revocation: '/protocol/openid-connect/revoke',
    },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:nemo:jwt',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => ({
          scope: 'api',
          audience: 'nemo-api',
          accessTokenFormat: RESOURCES[resourceIndicator] ?? 'jwt',
          accessTokenTTL: 300,
        }),
      },
    },
    extraTokenClaims: (ctx, token) => ({
      realm_access: { roles: ROLES[token.clientId] ?? [] },
    }),
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (!req.url.startsWith(REALM_PREFIX)) {
      res.statusCode = 404;
      res.end();
      return;
    }
    // oidc-provider builds its advertised URLs from originalUrl; keep the prefix there, strip it for routing.
    req.originalUrl = req.url;
    req.url = req.url.slice(REALM_PREFIX.length) || '/';
    callback(req, res);
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// Stop when the test process closes our stdin, so no provider outlives its test session.
process.stdin.on('end', () => server.close(() => process.exit(0)));
process.stdin.resume();
