// Operators (the admin token): providers with their health, prices, the catalog, and how
// reconciliation stands per provider (pending, unpriced, cost API failures).
import { allPages, api } from "../api.js";
import { figures, h, table } from "../dom.js";
import { count, dateTime, percent, usd } from "../format.js";
import { breakerBadge } from "./health.js";
import { panel } from "../panel.js";

export function operatorPage() {
  return [
    h("h1", { tabindex: "-1" }, "Operations"),
    panel("Reconciliation", "reconciliation", reconciliationPanel),
    panel("Providers", "providers", providersPanel),
    panel("Catalog", "catalog", catalogPanel),
    panel("Prices", "prices", pricesPanel),
  ];
}

const yesNo = (value) => (value ? "yes" : "no");

async function reconciliationPanel() {
  const answer = await allPages("/admin/v1/billing/providerReconciliations", "providerReconciliations");
  const columns = [
    { label: "Provider", cell: (r) => r.provider },
    { label: "Cost API", cell: (r) => (r.hasCostApi ? "yes" : "none") },
    { label: "Pending", num: true, cell: (r) => count(r.pendingRequests) },
    { label: "Unpriced", num: true, cell: (r) => count(r.unpricedRequests) },
    { label: "Cost API failures", num: true, cell: (r) => count(r.costApiFailures) },
    { label: "Failing now", cell: (r) => (Number(r.consecutiveFailures) > 0 ? h("span", { class: "badge failing" }, `failing (${r.consecutiveFailures} passes)`) : "no") },
    { label: "Last failure", cell: (r) => (r.lastFailureReason ? `${r.lastFailureReason}, ${dateTime(r.lastFailureTime)}` : "—") },
    { label: "Last asked", cell: (r) => dateTime(r.lastAttemptTime) },
  ];
  return [
    h("p", { class: "hint" }, `Last reconciliation pass of this Billing replica: ${dateTime(answer.lastPassTime)}.`),
    table("Reconciliation per provider", columns, answer.providerReconciliations, "No provider has a cost API or waiting requests."),
  ];
}

/** Each provider's health by id, or an empty map where this server does not measure it. */
async function healthByProvider() {
  try {
    const { providers } = await allPages("/admin/v1/providerHealth", "providers");
    return new Map(providers.map((p) => [p.provider, p]));
  } catch (error) {
    if (error.code === "route_not_found") return new Map();
    throw error;
  }
}

async function providersPanel() {
  const [{ providers }, health] = await Promise.all([allPages("/admin/v1/providers", "providers"), healthByProvider()]);
  const measured = (p, show) => (health.has(p.id) ? show(health.get(p.id)) : "—");
  // Secrets never reach the page (the API answers them empty); only whether one is set is shown.
  const columns = [
    { label: "Provider", cell: (p) => h("a", { href: `#/partner/${encodeURIComponent(p.id)}` }, p.id) },
    { label: "Org", cell: (p) => p.org },
    { label: "Base URL", cell: (p) => p.baseUrl },
    { label: "Tasks", cell: (p) => p.tasks.join(", ") },
    { label: "API key set", cell: (p) => yesNo(p.hasApiKey) },
    { label: "Cost API", cell: (p) => p.billingUrl || "none" },
    { label: "Cost API authorization set", cell: (p) => yesNo(p.hasBillingAuthorization) },
    { label: "Breaker", cell: (p) => measured(p, (m) => breakerBadge(m.breakerState)) },
    { label: "Requests", num: true, cell: (p) => measured(p, (m) => count(m.requests)) },
    { label: "Error rate", num: true, cell: (p) => measured(p, (m) => percent(m.errorRate)) },
    { label: "Rank", num: true, cell: (p) => String(p.defaultRank) },
  ];
  return [
    table("Registered providers", columns, providers, "No providers."),
    h("p", { class: "hint" }, "Requests and error rate (recent window) as every Router replica measured them; the breaker is the answering replica's own."),
  ];
}

async function catalogPanel() {
  const summary = await api("GET", "/admin/v1/catalogSummary");
  const last = summary.lastImportTime ? `${dateTime(summary.lastImportTime)} (${count(summary.lastImportModelCount)} ${summary.lastImportModelCount === 1 ? "model" : "models"})` : "never";
  return figures("Catalog", [
    ["Models", count(summary.modelCount), "catalog-models"],
    ["Aliases", count(summary.aliasCount), "catalog-aliases"],
    ["Last import", last, "catalog-last-import"],
  ]);
}

/** Token prices per provider model, as /v1/models lists them (a model and its aliases share a row). */
async function pricesPanel() {
  const { data } = await api("GET", "/v1/models");
  const rows = new Map();
  for (const model of data) {
    for (const p of model.providers) {
      const key = `${p.provider}\n${p.provider_model}`;
      if (!rows.has(key)) rows.set(key, { ...p, models: [] });
      rows.get(key).models.push(model.id);
    }
  }
  const columns = [
    { label: "Provider", cell: (r) => r.provider },
    { label: "Provider model", cell: (r) => r.provider_model },
    { label: "Hub models and aliases", cell: (r) => r.models.join(", ") },
    { label: "Input token", num: true, cell: (r) => usd(r.input_token_nano_usd) },
    { label: "Output token", num: true, cell: (r) => usd(r.output_token_nano_usd) },
  ];
  return table("Token prices per provider model", columns, [...rows.values()], "No models.");
}
