// node-oidc-provider's storage in Redis, laid out as the project's documented Redis adapter
// example lays it out (example/adapters/redis.js in panva/node-oidc-provider): one key per
// model instance with the instance's TTL; single-use things (codes, refresh tokens) as a hash,
// so consuming one is an HSET of a `consumed` field; every token of a grant listed under
// `grant:<id>`, so revoking the grant deletes them all; sessions also found by their uid.
// Every key starts with the prefix the benchmark gives (PEER_REDIS_PREFIX), so the benchmark
// can delete exactly these keys from the shared Redis afterwards.
import Redis from 'ioredis';

const grantable = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

const consumable = new Set([
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

const grantKey = (id) => `grant:${id}`;
const userCodeKey = (userCode) => `userCode:${userCode}`;
const uidKey = (uid) => `uid:${uid}`;

export function redisAdapter(url, keyPrefix) {
  const client = new Redis(url, { keyPrefix });

  class RedisAdapter {
    constructor(name) {
      this.name = name;
    }

    key(id) {
      return `${this.name}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const multi = client.multi();
      if (consumable.has(this.name)) {
        multi.hset(key, { payload: JSON.stringify(payload) });
      } else {
        multi.set(key, JSON.stringify(payload));
      }
      if (expiresIn) {
        multi.expire(key, expiresIn);
      }
      if (grantable.has(this.name) && payload.grantId) {
        const listKey = grantKey(payload.grantId);
        multi.rpush(listKey, key);
        // The list must outlive its longest-lived token (the example reads its TTL first).
        const ttl = await client.ttl(listKey);
        if (expiresIn > ttl) {
          multi.expire(listKey, expiresIn);
        }
      }
      if (payload.userCode) {
        multi.set(userCodeKey(payload.userCode), id, 'EX', expiresIn);
      }
      if (payload.uid) {
        multi.set(uidKey(payload.uid), id, 'EX', expiresIn);
      }
      await multi.exec();
    }

    async find(id) {
      const key = this.key(id);
      if (consumable.has(this.name)) {
        const { payload, ...rest } = await client.hgetall(key);
        return payload === undefined ? undefined : { ...rest, ...JSON.parse(payload) };
      }
      const data = await client.get(key);
      return data === null ? undefined : JSON.parse(data);
    }

    async findByUid(uid) {
      const id = await client.get(uidKey(uid));
      return id === null ? undefined : this.find(id);
    }

    async findByUserCode(userCode) {
      const id = await client.get(userCodeKey(userCode));
      return id === null ? undefined : this.find(id);
    }

    async consume(id) {
      await client.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000));
    }

    async destroy(id) {
      await client.del(this.key(id));
    }

    async revokeByGrantId(grantId) { // eslint-disable-line class-methods-use-this
      const listKey = grantKey(grantId);
      const tokens = await client.lrange(listKey, 0, -1);
      const multi = client.multi();
      // The list holds keys as the adapter names them; ioredis adds the prefix to each.
      tokens.forEach((token) => multi.del(token));
      multi.del(listKey);
      await multi.exec();
    }
  }

  return { Adapter: RedisAdapter, close: () => client.quit() };
}
