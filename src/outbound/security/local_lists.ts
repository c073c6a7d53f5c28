/**
 * The local host-list policy (Exim's smtp transport options): `hostsRequireTls` requires encryption,
 * `tlsVerifyHosts` and `hostsRequireOcsp` require an authenticated certificate; `tlsTryVerifyHosts`,
 * `tlsVerifyCertHostnames` and `hostsRequestOcsp` shape the handshake without requiring anything.
 */

import type { HostList } from "../../core/host_list.ts";
import type { SecurityPolicy } from "./engine.ts";

/** The host lists, resolved for one route. */
export interface LocalLists {
  hostsRequireTls: HostList;
  tlsVerifyHosts: HostList;
  tlsTryVerifyHosts: HostList;
  tlsVerifyCertHostnames: HostList;
  hostsRequestOcsp: HostList;
  hostsRequireOcsp: HostList;
  /** Further names (or `*.suffix` patterns) a host's certificate may carry: the route's tlsVerifyNames */
  tlsVerifyNames?: readonly string[];
}

/** The local host-list policy. */
export function localListsPolicy(lists: LocalLists): SecurityPolicy {
  return {
    name: "local",
    prepareDomain() {
      return Promise.resolve(async function localLists(req, target) {
        const subject = { ip: target.ip, name: target.name };
        if (await lists.hostsRequireTls.match(subject)) req.raiseTls(1, "hostsRequireTls");
        const requireVerify = await lists.tlsVerifyHosts.match(subject);
        if (requireVerify) req.raiseTls(2, "tlsVerifyHosts");
        const requireOcsp = await lists.hostsRequireOcsp.match(subject);
        if (requireOcsp) {
          req.raiseTls(2, "hostsRequireOcsp");
          req.requireOcsp = true;
        }
        req.tryVerify ||= requireVerify || requireOcsp || await lists.tlsTryVerifyHosts.match(subject);
        req.checkNames ||= await lists.tlsVerifyCertHostnames.match(subject);
        req.requestOcsp ||= requireOcsp || await lists.hostsRequestOcsp.match(subject);
        if (lists.tlsVerifyNames) req.names.push(...lists.tlsVerifyNames);
      });
    },
  };
}
