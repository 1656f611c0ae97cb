// Spend per day from GET /v1/billing/accounts/{account}/dailyUsage, as chart series: one per
// model or provider (each day's amount settled + pending + unpriced: what the account is
// charged), or one per state (settled, pending, unpriced).
import { api, query, seg } from "../api.js";

const STATES = ["settled", "pending", "unpriced"];
const amount = (slice, state) => BigInt(slice[`${state}NanoUsd`] ?? 0);
const charged = (slice) => STATES.reduce((sum, state) => sum + amount(slice, state), 0n);

export async function dailySeries(account, days, splitBy) {
  const usage = await api("GET", `/v1/billing/accounts/${seg(account)}/dailyUsage${query({ days })}`);
  const dates = usage.days.map((day) => day.date);
  const label = `Spend per day by ${splitBy}`;
  if (splitBy === "state") {
    return { days: dates, label, series: STATES.map((state) => ({ name: state, values: usage.days.map((day) => amount(day.total, state)) })) };
  }
  const slices = splitBy === "provider" ? "byProvider" : "byModel";
  const series = usage[slices].map((whole) => ({
    name: whole[splitBy],
    values: usage.days.map((day) => {
      const slice = day[slices].find((s) => s[splitBy] === whole[splitBy]);
      return slice ? charged(slice) : 0n;
    }),
  }));
  return { days: dates, series, label };
}
