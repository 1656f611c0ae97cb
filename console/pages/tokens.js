// The signed-in user's API tokens: names, hints (never a secret) and limits; create with
// optional limits (its secret is shown once, here), revoke. docs/api-keys.md.
import { allPages, api, seg } from "../api.js";
import { announce, attempt, errorBox, field, h, table } from "../dom.js";
import { dateTime, parseUsd, usd } from "../format.js";
import { panel } from "../panel.js";

export function tokensPanel(me) {
  const created = h("div", { "aria-live": "polite" });
  return panel("API tokens", "tokens", async (reload) => {
    const { apiTokens } = await allPages("/v1/me/tokens", "apiTokens");
    const alert = errorBox();
    const revoke = (token) =>
      attempt(alert, async () => {
        if (!window.confirm(`Revoke token ${token.name}? Programs using it stop working at once.`)) return;
        await api("DELETE", `/v1/me/tokens/${seg(token.name)}`);
        announce(`Token ${token.name} revoked.`);
        await reload();
      });
    const columns = [
      { label: "Name", cell: (t) => t.name },
      { label: "Ends with", cell: (t) => (t.suffix ? `…${t.suffix}` : "—") },
      { label: "Created", cell: (t) => dateTime(t.createTime) },
      { label: "Limits", cell: (t) => limitsText(t.limits) },
      { label: "Actions", className: "actions", cell: (t) => h("button", { type: "button", class: "danger", "aria-label": `Revoke token ${t.name}`, onclick: () => revoke(t) }, "Revoke") },
    ];
    return [table(`Tokens of ${me.user}`, columns, apiTokens, "No tokens."), alert, createForm(reload, created)];
  });
}

// A token's limits in words; "—" when it has none.
export function limitsText(limits) {
  if (!limits) return "—";
  const parts = [];
  // int64 fields arrive as decimal strings, and zero (no limit) may be printed: "0" is no limit.
  if (Number(limits.requestsPerMinute)) parts.push(`${limits.requestsPerMinute} requests/min`);
  if (Number(limits.tokensPerMinute)) parts.push(`${limits.tokensPerMinute} tokens/min`);
  if (BigInt(limits.budgetNanoUsd ?? 0) > 0n) parts.push(`${usd(limits.budgetNanoUsd)} ${limits.budgetPeriod}`);
  if (limits.expireTime) parts.push(`expires ${dateTime(limits.expireTime)}`);
  if (limits.allowedModels?.length) parts.push(`models: ${limits.allowedModels.join(", ")}`);
  return parts.join("; ") || "—";
}

// The limits the form's fields ask for (empty fields set none).
function limitsOf(inputs) {
  const limits = {};
  if (inputs.rpm.value) limits.requestsPerMinute = Number(inputs.rpm.value);
  if (inputs.tpm.value) limits.tokensPerMinute = inputs.tpm.value;
  if (inputs.budget.value) {
    const budget = parseUsd(inputs.budget.value);
    if (budget === null) throw new Error("Budget: an amount of USD such as 5 or 0.25.");
    limits.budgetNanoUsd = String(budget);
    limits.budgetPeriod = inputs.period.value;
  }
  if (inputs.expiry.value) limits.expireTime = new Date(inputs.expiry.value).toISOString();
  const models = inputs.models.value.split(/[\s,]+/).filter(Boolean);
  if (models.length) limits.allowedModels = models;
  return limits;
}

function limitInputs() {
  const number = (id, max) => h("input", { id, type: "number", min: "1", max, step: "1", inputmode: "numeric" });
  return {
    rpm: number("token-rpm", "1000000"),
    tpm: number("token-tpm", "1000000000"),
    budget: h("input", { id: "token-budget", type: "text", inputmode: "decimal" }),
    period: h("select", { id: "token-period" }, ["daily", "weekly", "monthly"].map((p) => h("option", { value: p }, p))),
    expiry: h("input", { id: "token-expiry", type: "datetime-local" }),
    models: h("input", { id: "token-models", type: "text", autocomplete: "off" }),
  };
}

function createForm(reload, created) {
  const name = h("input", { id: "token-name", name: "name", type: "text", autocomplete: "off", required: true, maxlength: "96", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*" });
  const limits = limitInputs();
  const alert = errorBox();
  const form = h(
    "form",
    {
      class: "card narrow",
      "aria-label": "Create a token",
      onsubmit: (event) => {
        event.preventDefault();
        attempt(alert, async () => {
          const wanted = limitsOf(limits);
          const body = Object.keys(wanted).length ? { name: name.value, limits: wanted } : { name: name.value };
          const answer = await api("POST", "/v1/me/tokens", body);
          created.replaceChildren(
            h("p", {}, `Token ${answer.apiToken.name} created. Copy it now: it is not shown again.`),
            h("p", { class: "secret", "data-new-token": "" }, answer.token),
          );
          name.value = "";
          Object.values(limits).forEach((input) => input.tagName === "SELECT" || (input.value = ""));
          await reload();
          announce(`Token ${answer.apiToken.name} created.`);
        });
      },
    },
    field("New token name", name, "Letters, digits, '.', '_' and '-'."),
    h(
      "fieldset",
      {},
      h("legend", {}, "Limits (optional)"),
      field("Requests per minute", limits.rpm),
      field("Tokens per minute", limits.tpm, "Input plus output tokens."),
      field("Budget (USD)", limits.budget, "Spending allowed per period, e.g. 5 or 0.25."),
      field("Budget period", limits.period, "Resets at the start of each UTC day, week (Monday) or month."),
      field("Expires", limits.expiry, "In your local time; the token is refused afterwards."),
      field("Allowed models", limits.models, "Model ids separated by spaces; any model when empty."),
    ),
    h("button", { type: "submit" }, "Create token"),
    alert,
    created,
  );
  return form;
}
