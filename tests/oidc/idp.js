// A real OpenID provider for the tests (oidc-provider): node idp.js PORT REDIRECT_URI[,...] POST_LOGOUT_URI
// One confidential client "edgeward" (authorization code with PKCE, refresh tokens, introspection),
// users log in with any name and the password "secret" on the provider's development login form.
import Provider from 'oidc-provider';

const [port, redirectUri, postLogoutUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const accessTtl = Number(process.env.ACCESS_TTL || 3600);

const configuration = {
  clients: [{
    client_id: 'edgeward',
    client_secret: 'edgeward-client-secret',
    redirect_uris: redirectUri.split(','),
    post_logout_redirect_uris: [postLogoutUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.test`, email_verified: true, name: id,
                 groups: id === 'alice' ? ['staff'] : ['guests'] };
      },
    };
  },
  ttl: { AccessToken: accessTtl, IdToken: 3600, RefreshToken: 86400, Session: 86400, Grant: 86400, Interaction: 600 },
  issueRefreshToken: async () => true,
  conformIdTokenClaims: false,
  cookies: { keys: ['edgeward-test-idp-cookie-key'] },
};

const provider = new Provider(issuer, configuration);
provider.listen(Number(port), '127.0.0.1', () => { process.stdout.write(`ready ${issuer}\n`); });
