/**
 * The services a running Ferry opens at start and closes at stop, reachable from config-made lookups and
 * checks. Config files build lookups before anything is started, so a lookup finds its Redis here at call
 * time. One Ferry runs per process (tests that start two nodes run two processes).
 */

import type { RedisService } from "./redis_service.ts";

let redis: RedisService | undefined;

/** Makes `service` the Redis that lookups and stores use (main.ts at start; undefined at stop). */
export function setRedisService(service: RedisService | undefined): void {
  redis = service;
}

/** The running Redis service, if `redis` is configured and Ferry has started. */
export function redisService(): RedisService | undefined {
  return redis;
}
