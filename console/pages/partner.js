// A partner's provider: its mappings (list, create single and tag-filter mappings, switch status,
// delete), each with the provider's measured health and its conformance report, and its prices.
import { api, seg } from "../api.js";
import { announce, attempt, errorBox, field, figures, h, table } from "../dom.js";
import { count, dateTime, ms, perUnit, percent } from "../format.js";
import { panel, section } from "../panel.js";
import { breakerBadge, providerHealth } from "./health.js";

// The tasks Switchboard serves (services/common/tasks.py): the only ones a mapping may have.
const TASKS = [
  "conversational", "text-generation", "text-to-image", "feature-extraction", "sentence-similarity",
  "automatic-speech-recognition", "text-to-speech", "text-to-video", "image-to-image", "text-classification",
  "token-classification", "zero-shot-classification", "summarization", "translation", "question-answering",
  "fill-mask", "image-classification", "object-detection", "image-segmentation",
];

export function partnerPage(provider) {
  const report = h("div", { id: "report", "aria-live": "polite" });
  const mappings = panel("Mappings", "mappings", (reload) => mappingsPanel(provider, reload, report));
  return [
    h("h1", { tabindex: "-1" }, `Provider ${provider}`),
    panel("Health", "health", () => healthPanel(provider)),
    mappings,
    report,
    createPanel(provider, () => mappings.reload()),
    panel("Prices", "prices", () => pricesPanel(provider)),
  ];
}

/** The provider's prices as callers see them in /v1/models: per million tokens, and per unit of the task. */
async function pricesPanel(provider) {
  const models = await api("GET", "/v1/models");
  const rows = models.data.flatMap((m) => m.providers.filter((p) => p.provider === provider).map((p) => ({ model: m.id, ...p })));
  const columns = [
    { label: "Hub model", cell: (r) => r.model },
    { label: "Provider model", cell: (r) => r.provider_model },
    { label: "Per million tokens (input / output)", num: true, cell: (r) => (r.pricing ? `$${r.pricing.input} / $${r.pricing.output}` : "—") },
    { label: "Per unit of the task", num: true, cell: (r) => (r.unit_price ? [perUnit(r.unit_price.nano_usd, r.unit_price.unit), h("div", { class: "hint" }, r.unit_price.task)] : "—") },
  ];
  return [
    h("p", { class: "hint" }, "Set by your org's writers with PUT /api/partners/{provider}/prices (unitNanoUsd: nano-USD per unit of the mapped task) or by the operators."),
    table(`Prices of ${provider}`, columns, rows, "No models served yet."),
  ];
}

async function healthPanel(provider) {
  const health = await providerHealth(provider);
  if (health === null) return h("p", { class: "hint" }, "This server does not measure provider health yet.");
  const latest = health.lastError;
  return [
    figures("Provider health", [
      ["Breaker (one per provider)", breakerBadge(health.breakerState), "breaker"],
      ["Failures in a row", count(health.consecutiveFailures), "consecutive-failures"],
      ["Requests", count(health.requests), "health-requests"],
      ["Errors", count(health.errors), "health-errors"],
      ["Error rate (recent)", percent(health.errorRate), "health-error-rate"],
      ["Latest error", latest ? `${dateTime(latest.time)} ${latest.reason}` : "none", "health-latest-error"],
    ]),
    h("p", { class: "hint" }, `Measured by every Router replica since ${dateTime(health.startTime)}, per provider model (mappings to the same provider model share their figures); error rate over the last ${health.windowSeconds / 60} minutes. The breaker is the answering replica's own.`),
  ];
}

/** The hub's listing {task: {model or "tag-filter=...": {_id, providerId, status, tags}}} as rows. */
function mappingRows(listing) {
  return Object.entries(listing).flatMap(([task, entries]) =>
    Object.entries(entries).map(([key, value]) => ({ task, key, ...value })),
  );
}

async function mappingsPanel(provider, reload, report) {
  const [listing, health] = await Promise.all([api("GET", `/api/partners/${seg(provider)}/models`), providerHealth(provider)]);
  const byModel = new Map((health?.models || []).map((m) => [m.providerModel, m]));
  const measured = (row) => byModel.get(row.providerId);
  const alert = errorBox();
  const act = (action) => attempt(alert, action);
  const base = `/api/partners/${seg(provider)}/models`;
  const setStatus = (row, status) =>
    act(async () => {
      await api("PUT", `${base}/${seg(row._id)}/status`, { status });
      announce(`Mapping ${row.key} is now ${status}.`);
      await reload();
    });
  const remove = (row) =>
    act(async () => {
      if (!window.confirm(`Delete the mapping of ${row.key} (${row.task})?`)) return;
      await api("DELETE", `${base}/${seg(row._id)}`);
      announce(`Mapping ${row.key} deleted.`);
      await reload();
    });
  const showReport = (row, run) =>
    act(async () => {
      const path = `${base}/${seg(row._id)}${run ? ":check" : "/conformanceReport"}`;
      report.replaceChildren(h("p", { class: "hint" }, run ? "Checking…" : "Loading…"));
      try {
        reportView(report, row, await api(run ? "POST" : "GET", path, run ? {} : undefined));
        if (run) await reload(); // the listing shows the new report in brief
      } catch (error) {
        report.replaceChildren();
        throw error;
      }
    });
  const columns = [
    { label: "Hub model or tags, task", cell: (r) => [r.tags ? `tags: ${r.tags.join(", ")}` : r.key, h("div", { class: "hint" }, r.task)] },
    { label: "Provider model", cell: (r) => r.providerId },
    { label: "Status", cell: (r) => [h("span", { class: `badge ${r.status}` }, r.status), r.statusReason ? h("div", { class: "hint" }, r.statusReason) : null] },
    { label: "Requests", num: true, cell: (r) => count(measured(r)?.requests) },
    { label: "Error rate", num: true, cell: (r) => (measured(r) ? percent(measured(r).errorRate) : "—") },
    { label: "First token", num: true, cell: (r) => ms(measured(r)?.timeToFirstTokenMs) },
    { label: "Throughput", num: true, cell: (r) => (measured(r)?.throughputTokensPerSecond ? `${Number(measured(r).throughputTokensPerSecond).toFixed(1)} tok/s` : "—") },
    { label: "Last errors", cell: (r) => lastErrors(measured(r)?.lastErrors || []) },
    { label: "Probes (failed)", num: true, cell: (r) => (measured(r)?.probes ? [`${count(measured(r).probes)} (${count(measured(r).probeFailures)})`, measured(r).lastProbeFailure ? h("div", { class: "hint" }, measured(r).lastProbeFailure) : null] : "—") },
    { label: "Conformance", cell: (r) => conformance(r.conformance) },
    {
      label: "Actions",
      className: "actions",
      cell: (r) => {
        const next = r.status === "live" ? "staging" : "live";
        return [
          h("button", { type: "button", class: "secondary", "aria-label": `Set ${r.key} ${next}`, onclick: () => setStatus(r, next) }, `Set ${next}`),
          h("button", { type: "button", class: "secondary", "aria-label": `Check ${r.key}`, onclick: () => showReport(r, true) }, "Run check"),
          h("button", { type: "button", class: "secondary", "aria-label": `Conformance report of ${r.key}`, onclick: () => showReport(r, false) }, "Report"),
          h("button", { type: "button", class: "danger", "aria-label": `Delete ${r.key}`, onclick: () => remove(r) }, "Delete"),
        ];
      },
    },
  ];
  return [table(`Mappings of ${provider}`, columns, mappingRows(listing), "No mappings yet."), alert];
}

/** The latest conformance check in brief, as the listing carries it. */
function conformance(brief) {
  if (!brief) return h("span", { class: "hint" }, "not checked");
  return [h("span", { class: `badge ${brief.passed ? "live" : "error"}` }, brief.passed ? "passed" : "failed"), h("div", { class: "hint" }, dateTime(brief.checkTime))];
}

function lastErrors(errors) {
  if (!errors.length) return "—";
  return h(
    "details",
    {},
    h("summary", {}, `${errors.length} recent`),
    h("ul", {}, errors.map((e) => h("li", {}, `${dateTime(e.time)} ${e.providerStatus || ""} ${e.reason}: ${e.message}`))),
  );
}

function reportView(holder, row, report) {
  const columns = [
    { label: "Check", cell: (c) => c.name },
    { label: "Result", cell: (c) => h("span", { class: `badge ${c.result === "fail" ? "error" : c.result === "pass" ? "live" : "staging"}` }, c.result) },
    { label: "Expected", cell: (c) => c.expected },
    { label: "Got", cell: (c) => c.got },
    { label: "Took", num: true, cell: (c) => ms(c.durationMs) },
  ];
  holder.replaceChildren(
    h("h2", { id: "report-title", tabindex: "-1" }, `Conformance report: ${row.key}`),
    h("p", {}, `${report.passed ? "Passed" : "Failed"}, ${dateTime(report.checkTime)}. Time to first token ${ms(report.timeToFirstTokenMs)}; tools ${report.supportsTools ? "supported" : "not supported"}; structured output ${report.supportsStructuredOutput ? "supported" : "not supported"}.`),
    table(`Checks of ${row.providerId}`, columns, report.checks),
  );
  holder.querySelector("h2").focus();
}

function createPanel(provider, refresh) {
  const kind = h("select", { id: "mapping-type", name: "type" }, h("option", { value: "" }, "One hub model"), h("option", { value: "tag-filter" }, "Tag filter (LoRA adapters)"));
  const task = h("input", { id: "mapping-task", name: "task", type: "text", list: "tasks", required: true, autocomplete: "off" });
  const model = h("input", { id: "mapping-model", name: "hfModel", type: "text", autocomplete: "off", spellcheck: "false" });
  const tags = h("input", { id: "mapping-tags", name: "tags", type: "text", autocomplete: "off", spellcheck: "false" });
  const providerModel = h("input", { id: "mapping-provider-model", name: "providerModel", type: "text", required: true, autocomplete: "off", spellcheck: "false" });
  const status = h("select", { id: "mapping-status", name: "status" }, h("option", { value: "staging" }, "staging"), h("option", { value: "live" }, "live"));
  const modelField = field("Hub model id", model, "As in the catalog, e.g. org/name.");
  const tagsField = field("Tags", tags, "Comma-separated; a model with all of them matches (e.g. lora, base_model:adapter:org/name).");
  const sync = () => {
    const filter = kind.value === "tag-filter";
    modelField.hidden = filter;
    tagsField.hidden = !filter;
    model.required = !filter;
    tags.required = filter;
  };
  kind.addEventListener("change", sync);
  sync();
  const alert = errorBox();
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: (event) => {
        event.preventDefault();
        attempt(alert, async () => {
          const filter = kind.value === "tag-filter";
          const body = { task: task.value.trim(), providerModel: providerModel.value.trim(), status: status.value };
          if (filter) Object.assign(body, { type: "tag-filter", adapterType: "lora", tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) });
          else body.hfModel = model.value.trim();
          const created = await api("POST", `/api/partners/${seg(provider)}/models`, body);
          announce(`Mapping ${created._id} created (${created.status}).`);
          form.reset();
          sync();
          refresh();
        });
      },
    },
    h("datalist", { id: "tasks" }, TASKS.map((t) => h("option", { value: t }))),
    field("Kind", kind),
    field("Task", task, "The hub task, e.g. conversational or text-to-image."),
    modelField,
    tagsField,
    field("Provider model id", providerModel, "The model id your API expects."),
    field("Status", status, "Staging mappings are reachable only by your org's members; live ones by everyone."),
    h("button", { type: "submit" }, "Create mapping"),
    alert,
  );
  const created = section("New mapping", "create");
  created.append(form);
  return created;
}
