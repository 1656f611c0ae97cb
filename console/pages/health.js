// Providers' shared health (every Router replica's traffic, the probes) (GET /api/partners/{provider}/health, paged models).
import { allPages, seg } from "../api.js";
import { h } from "../dom.js";

/** "closed", "open" or "half_open" as a badge. */
export function breakerBadge(state) {
  const name = (state || "BREAKER_STATE_UNSPECIFIED").replace("BREAKER_STATE_", "").toLowerCase();
  return h("span", { class: `badge ${name}` }, name);
}

/** The provider's health with every page of its models, or null where this server does not measure it. */
export async function providerHealth(provider) {
  try {
    return await allPages(`/api/partners/${seg(provider)}/health`, "models");
  } catch (error) {
    if (error.code === "route_not_found") return null;
    throw error;
  }
}
