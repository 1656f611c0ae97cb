// Spend per day from GET /v1/billing/accounts/{account}/dailyUsage, as chart series: one per
// model or provider, each day's amount settled + pending + unpriced (what the account is charged).
import { api, query, seg } from "../api.js";

export const spent = (slice) =>
  BigInt(slice.settledNanoUsd ?? 0) + BigInt(slice.pendingNanoUsd ?? 0) + BigInt(slice.unpricedNanoUsd ?? 0);

export async function dailySeries(account, days, splitBy) {
  const usage = await api("GET", `/v1/billing/accounts/${seg(account)}/dailyUsage${query({ days })}`);
  const slices = splitBy === "provider" ? "byProvider" : "byModel";
  const names = usage[slices].map((slice) => slice[splitBy]);
  const series = names.map((name) => ({
    name,
    values: usage.days.map((day) => {
      const slice = day[slices].find((s) => s[splitBy] === name);
      return slice ? spent(slice) : 0n;
    }),
  }));
  return { days: usage.days.map((day) => day.date), series, label: `Spend per day by ${splitBy}` };
}
