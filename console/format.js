// Money is int64 nano-USD, which the API sends as a decimal string: BigInt keeps it exact.

const NANO = 1_000_000_000n;

/** "$1,234.50", "$0.0000013": every nano-USD shown, at least two decimals. */
export function usd(nanoUsd) {
  let n = BigInt(nanoUsd ?? 0);
  const sign = n < 0n ? "-" : "";
  if (n < 0n) n = -n;
  const whole = (n / NANO).toLocaleString("en-US");
  const fraction = (n % NANO).toString().padStart(9, "0").replace(/0+$/, "").padEnd(2, "0");
  return `${sign}$${whole}.${fraction}`;
}

/** Dollars as typed ("12", "0.5", "1.000000001") to nano-USD; null when not such an amount. */
export function parseUsd(text) {
  const match = /^\s*\$?(\d{1,12})(?:\.(\d{0,9}))?\s*$/.exec(text);
  if (!match) return null;
  return BigInt(match[1]) * NANO + BigInt((match[2] || "").padEnd(9, "0"));
}

export function count(value) {
  return Number(value ?? 0).toLocaleString("en-US");
}

export function percent(ratio) {
  return `${(100 * Number(ratio ?? 0)).toFixed(1)} %`;
}

export function ms(value) {
  return value ? `${Number(value).toFixed(0)} ms` : "—";
}

/** The current UTC month, "YYYY-MM" (the billing period). */
export function thisMonth(now = new Date()) {
  return now.toISOString().slice(0, 7);
}

export function dateTime(value) {
  return value ? new Date(value).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "—";
}

// The units tasks are sold in (services/common/tasks.py), as words: [one, many].
const UNIT_WORDS = {
  token: ["token", "tokens"],
  input_token: ["input token", "input tokens"],
  image: ["image", "images"],
  audio_second: ["second of audio", "seconds of audio"],
  character: ["character", "characters"],
  video_second: ["second of video", "seconds of video"],
  request: ["request", "requests"],
};

/** "70 seconds of audio"; "—" without a unit (records from before units). */
export function units(amount, unit) {
  const words = UNIT_WORDS[unit];
  if (!words) return "—";
  return `${count(amount)} ${BigInt(amount ?? 0) === 1n ? words[0] : words[1]}`;
}

/** "$0.0025 per image". */
export function perUnit(nanoUsd, unit) {
  return `${usd(nanoUsd)} per ${(UNIT_WORDS[unit] || [unit])[0]}`;
}
