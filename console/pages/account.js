// A caller's or an org's page: this month's spend, spend per day, the split by model,
// provider and task (with the units each task used), credits and the spending limit, and the account's tokens (a user) or members (an org).
import { api, query, seg } from "../api.js";
import { announce, attempt, errorBox, field, figures, h, table } from "../dom.js";
import { count, parseUsd, thisMonth, units, usd } from "../format.js";
import { panel } from "../panel.js";
import "../chart.js";
import { tokensPanel } from "./tokens.js";
import { membersPanel } from "./members.js";
import { dailySeries } from "./series.js";

export function accountPage(me, account) {
  const isOrg = account !== me.user;
  return [
    h("h1", { tabindex: "-1" }, isOrg ? `Org ${account}` : `Your account: ${account}`),
    panel("This month", "month", (reload) => monthPanel(account, reload)),
    panel("Spend per day", "daily", () => dailyPanel(account)),
    panel("By model, provider and task", "split", () => splitPanel(account)),
    isOrg ? membersPanel(account) : tokensPanel(me),
  ];
}

const usageOf = (account) => api("GET", `/v1/billing/usage${query({ account, period: thisMonth() })}`);
const accountOf = (account) => api("GET", `/v1/billing/accounts/${seg(account)}`);

async function monthPanel(account, reload) {
  const [usage, funds] = await Promise.all([usageOf(account), accountOf(account)]);
  const unpriced = usage.unpriced.reduce((sum, u) => sum + BigInt(u.estimatedNanoUsdExact), 0n);
  const limit = BigInt(funds.limitNanoUsdExact);
  return [
    h("p", { class: "hint" }, `Period ${usage.period} (UTC). Pending amounts are estimates until the provider's cost API settles them.`),
    figures("Spend this month", [
      ["Settled", usd(usage.settledNanoUsdExact), "settled"],
      ["Pending", usd(usage.pendingNanoUsdExact), "pending"],
      ["Unpriced", `${count(usage.unpriced.length)} (${usd(unpriced)})`, "unpriced"],
      ["Requests", count(usage.requests), "requests"],
      ["Included credits", usd(funds.includedCreditsNanoUsdExact), "credits"],
      ["Spending limit", limit === 0n ? "none" : usd(limit), "limit"],
      ["Spent (credits + limit)", usd(funds.spentNanoUsdExact), "spent"],
      ["Reserved in flight", usd(funds.reservedNanoUsdExact), "reserved"],
    ]),
    limitForm(account, limit, reload),
  ];
}

function limitForm(account, limit, reload) {
  const input = h("input", { id: "limit-usd", name: "limit", type: "text", inputmode: "decimal", autocomplete: "off", value: limit === 0n ? "" : usd(limit).slice(1).replaceAll(",", "") });
  const alert = errorBox();
  const put = (nano) =>
    attempt(alert, async () => {
      await api("PUT", `/v1/billing/accounts/${seg(account)}/limit`, { limitNanoUsd: nano.toString() });
      announce(nano === 0n ? "Spending limit removed." : `Spending limit set to ${usd(nano)}.`);
      await reload();
    });
  const form = h(
    "form",
    {
      class: "card narrow",
      "aria-label": "Spending limit",
      onsubmit: (event) => {
        event.preventDefault();
        const nano = parseUsd(input.value);
        if (nano === null || nano === 0n) alert.textContent = "Enter an amount in US dollars, such as 25 or 0.50.";
        else put(nano);
      },
    },
    field("Spending limit (USD per month, beyond the included credits)", input, "Requests that would pass credits + limit are refused with HTTP 402."),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Set limit"), h("button", { type: "button", class: "secondary", onclick: () => put(0n) }, "Remove limit")),
    alert,
  );
  return form;
}

function dailyPanel(account) {
  const chart = h("sb-stacked-bars");
  const alert = errorBox();
  const days = choice("Days", "days", [["30", "Last 30 days"], ["90", "Last 90 days"]]);
  const split = choice("Split by", "split-by", [["model", "Model"], ["provider", "Provider"], ["state", "Settled, pending, unpriced"]]);
  const draw = () =>
    attempt(alert, async () => {
      const data = await dailySeries(account, Number(days.value()), split.value());
      chart.data = data;
      tableHolder.replaceChildren(dailyTable(data));
    });
  const tableHolder = h("div");
  days.element.addEventListener("change", draw);
  split.element.addEventListener("change", draw);
  draw();
  return [h("div", { class: "row" }, days.element, split.element), alert, chart, h("details", {}, h("summary", {}, "The same figures as a table"), tableHolder)];
}

function dailyTable({ days, series }) {
  const rows = days.map((day, i) => ({ day, amounts: series.map((s) => s.values[i]) })).filter((r) => r.amounts.some((a) => BigInt(a ?? 0) !== 0n));
  const columns = [{ label: "Day", cell: (r) => r.day }, ...series.map((s, k) => ({ label: s.name, num: true, cell: (r) => usd(r.amounts[k]) }))];
  return table("Spend per day", columns, rows, "No spend in this period.");
}

/** A radio group; value() is the checked value. */
function choice(legend, name, options) {
  const element = h(
    "fieldset",
    { class: "choice" },
    h("legend", {}, legend),
    options.map(([value, label], i) => h("label", {}, h("input", { type: "radio", name, value, checked: i === 0 }), ` ${label}`)),
  );
  return { element, value: () => element.querySelector("input:checked").value };
}

async function splitPanel(account) {
  const usage = await usageOf(account);
  const line = (key, label) => [
    { label, cell: (l) => l[key] },
    { label: "Requests", num: true, cell: (l) => count(l.requests) },
    { label: "Settled", num: true, cell: (l) => usd(l.settledNanoUsdExact) },
    { label: "Pending", num: true, cell: (l) => usd(l.pendingNanoUsdExact) },
  ];
  const [task, ...money] = line("task", "Task");
  const byTask = [task, money[0], { label: "Used", num: true, cell: (l) => units(l.units, l.unit) }, ...money.slice(1)];
  const unpriced = [
    { label: "Request id", cell: (u) => u.requestId },
    { label: "Provider", cell: (u) => u.provider },
    { label: "Why", cell: (u) => u.reason },
    { label: "Charged (estimate)", num: true, cell: (u) => usd(u.estimatedNanoUsdExact) },
  ];
  return [
    table(`By model, ${usage.period}`, line("model", "Model"), usage.byModel, "No requests this month."),
    table(`By provider, ${usage.period}`, line("provider", "Provider"), usage.byProvider, "No requests this month."),
    table(`By task, ${usage.period}`, byTask, usage.byTask, "No requests this month."),
    table("Unpriced requests (no cost from the provider; charged their estimate)", unpriced, usage.unpriced, "None."),
  ];
}
